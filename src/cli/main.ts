/** Entry point of the `dlock` command (bin/dlock.js imports this module). */
import { run } from './program.js';

// `dlock ls | head`: a reader that closes the pipe early ends the command quietly, as Unix tools do.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
}

const code = await run(process.argv);
process.exitCode = code;
// Everything is closed by now; should a stray handle remain, do not hang the shell.
setTimeout(() => process.exit(code), 500).unref();
