#!/usr/bin/env node
// The `dlock` command: a shim over the compiled CLI (npm run build emits dist/esm).
// The CLI's own packages (commander, cli-progress) are optional peer dependencies, so that a
// library install (`npm install dlock`) brings none of them; a clone of the repository has them
// as devDependencies. Say plainly what to install when they are absent.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const missing = ['commander', 'cli-progress'].filter((name) => {
  try {
    require.resolve(name);
    return false;
  } catch {
    return true;
  }
});
if (missing.length > 0) {
  process.stderr.write(
    `dlock: the dlock command needs ${missing.join(' and ')}, which a library install does not bring: ` +
      `npm install ${missing.join(' ')} (or run it once with: npx -p dlock ${missing.map((m) => `-p ${m}`).join(' ')} dlock --help).\n`,
  );
  process.exitCode = 1;
} else {
  import('../dist/esm/cli/main.js').catch((e) => {
    if (e && e.code === 'ERR_MODULE_NOT_FOUND' && String(e.message).includes('dist/esm/cli/main.js')) {
      process.stderr.write('dlock: the CLI is not built yet: run `npm run build` first.\n');
    } else {
      process.stderr.write(`dlock: ${e && e.stack ? e.stack : String(e)}\n`);
    }
    process.exitCode = 1;
  });
}
