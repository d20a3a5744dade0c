#!/usr/bin/env node
// The `dlock` command: a shim over the compiled CLI (npm run build emits dist/esm).
import('../dist/esm/cli/main.js').catch((e) => {
  if (e && e.code === 'ERR_MODULE_NOT_FOUND' && String(e.message).includes('dist/esm/cli/main.js')) {
    process.stderr.write('dlock: the CLI is not built yet: run `npm run build` first.\n');
  } else {
    process.stderr.write(`dlock: ${e && e.stack ? e.stack : String(e)}\n`);
  }
  process.exitCode = 1;
});
