// `npm run bench -- [args]`: builds first (the benchmarks load dlock from dist/ by default), except
// for --help (usage at once) and --src (dlock loaded from src/ through tsx).
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
const skipBuild = args.some((a) => a === '--help' || a === '-h' || a === '--src');
if (!skipBuild) {
  const build = spawnSync('npm', ['run', 'build', '--silent'], { stdio: 'inherit' });
  if (build.status !== 0) process.exit(build.status ?? 1);
}
const bench = spawnSync('tsx', ['bench/main.ts', ...args], { stdio: 'inherit' });
process.exit(bench.status ?? 1);
