import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Full path of `bin` on PATH, or undefined. */
export function which(bin: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir.length === 0) continue;
    const candidate = join(dir, bin);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

let aptUpdated: Promise<unknown> | undefined;
const installs = new Map<string, Promise<void>>();

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Make sure `bin` is on PATH (or at one of the absolute paths `alsoAt`, for packages that
 * install outside PATH, like /usr/lib/postgresql/15/bin/postgres); resolve its full path. When it is missing and we are root, install the Debian package
 * that provides it (`apt-get update` once per process, then `apt-get install -y`); otherwise
 * throw an error naming the package. Tests never skip silently because an engine is missing.
 */
export async function ensureBinary(bin: string, debianPackage: string, alsoAt: readonly string[] = []): Promise<string> {
  const find = (): string | undefined => which(bin) ?? alsoAt.find(isExecutable);
  const found = find();
  if (found) return found;
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!isRoot || which('apt-get') === undefined) {
    throw new Error(
      `"${bin}" is not on PATH and cannot be installed automatically here. ` +
        `Install the Debian package "${debianPackage}" (apt-get install -y ${debianPackage}) and run the tests again.`,
    );
  }
  let install = installs.get(debianPackage);
  if (!install) {
    install = (async () => {
      const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
      const opts = { env, maxBuffer: 64 * 1024 * 1024, timeout: 10 * 60_000 };
      aptUpdated ??= run('apt-get', ['update'], opts);
      await aptUpdated;
      // Wait for a dpkg lock another installer holds instead of failing at once.
      await run('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'install', '-y', debianPackage], opts);
    })();
    installs.set(debianPackage, install);
  }
  try {
    await install;
  } catch (e) {
    throw new Error(`Installing the Debian package "${debianPackage}" (for "${bin}") failed: ${String(e)}`, { cause: e });
  }
  const after = find();
  if (!after) throw new Error(`Installed "${debianPackage}" but "${bin}" is still not on PATH.`);
  return after;
}
