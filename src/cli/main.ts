/** Entry point of the `dlock` command (bin/dlock.js imports this module). */
import { run } from './program.js';

const code = await run(process.argv);
process.exitCode = code;
// Everything is closed by now; should a stray handle remain, do not hang the shell.
setTimeout(() => process.exit(code), 500).unref();
