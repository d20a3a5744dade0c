// After tsc: strip comments from the emitted JavaScript (the TSDoc stays in the .d.ts files,
// where editors read it). The published package ships no source maps and no src/ copy, so keeping
// the comments in .js files would only add weight (see the "files" field in package.json). There
// is one build, ESM: CommonJS callers load it with require(esm) (Node >= 20.19), which is why the
// package has no second JavaScript tree and no second type tree.
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const dist = fileURLToPath(new URL('../dist/', import.meta.url));

/**
 * Drop the leading indentation of every line that does not start inside a template literal or
 * string (tsc indents by 4 spaces: ~110 kB of the package). Lines are kept, so a stack trace's
 * line numbers still point at the same statement; template literals (SQL, Lua, the dashboard page,
 * help texts) keep every character.
 */
function unindent(code, name) {
  const file = ts.createSourceFile(name, code, ts.ScriptTarget.ES2022, true, ts.ScriptKind.JS);
  const keep = [];
  const visit = (node) => {
    switch (node.kind) {
      case ts.SyntaxKind.NoSubstitutionTemplateLiteral:
      case ts.SyntaxKind.TemplateHead:
      case ts.SyntaxKind.TemplateMiddle:
      case ts.SyntaxKind.TemplateTail:
      case ts.SyntaxKind.StringLiteral:
        keep.push([node.getStart(file), node.end]);
        break;
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  const inside = (pos) => keep.some(([a, b]) => pos > a && pos < b);
  let out = '';
  let at = 0;
  for (const line of code.split('\n')) {
    const body = line.trimStart();
    out += (inside(at) ? line : body) + '\n';
    at += line.length + 1;
  }
  return out.slice(0, -1);
}

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
      writeFileSync(path, unindent(out, name));
    }
  }
}
strip(join(dist, 'esm'));

/**
 * Type declarations that no public entry point reaches (internal modules: the wait loop, the
 * doctor's engine checks...) are not shipped: walk the imports of every `exports` entry's .d.ts and
 * delete the rest (the CLI's are excluded by package.json "files" already).
 */
function pruneDeclarations() {
  const root = fileURLToPath(new URL('../', import.meta.url));
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const reached = new Set();
  const todo = Object.values(pkg.exports).filter((e) => typeof e === 'object' && e.types).map((e) => join(root, e.types));
  while (todo.length > 0) {
    const file = todo.pop();
    if (reached.has(file) || !existsSync(file)) continue;
    reached.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(/(?:from|import)\s*\(?\s*["'](\.[^"']+)["']/g)) {
      todo.push(join(dirname(file), m[1].replace(/\.js$/, '.d.ts')));
    }
  }
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.d.ts') && !reached.has(path) && !path.includes(`${join('esm', 'cli')}`)) rmSync(path);
    }
  };
  walk(join(dist, 'esm'));
}
pruneDeclarations();
