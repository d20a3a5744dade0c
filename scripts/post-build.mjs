// After tsc: strip comments from the emitted JavaScript (the TSDoc stays in the .d.ts files,
// where editors read it). The published package ships no source maps and no src/ copy, so keeping
// the comments in .js files would only add weight (see the "files" field in package.json). There
// is one build, ESM: CommonJS callers load it with require(esm) (Node >= 20.19), which is why the
// package has no second JavaScript tree and no second type tree.
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const dist = fileURLToPath(new URL('../dist/', import.meta.url));

function strip(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) strip(path);
    else if (name.endsWith('.js')) {
      const code = readFileSync(path, 'utf8');
      // Re-emit the same code without comments (the syntax level is tsc's target: nothing is
      // down-levelled; module syntax is kept as it is); not minified, so stack
      // traces stay readable.
      const out = ts.transpileModule(code, {
        fileName: name,
        compilerOptions: { allowJs: true, removeComments: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.Preserve, sourceMap: false },
      }).outputText;
      writeFileSync(path, out);
    }
  }
}
strip(join(dist, 'esm'));
