/**
 * doctor checks for embedded SQLite: the database file exists (it is never created here), is a
 * SQLite file in WAL mode (read from its header, without opening it, so no lock is taken), can
 * be written with its directory (the driver needs both), and lives on a local file system
 * (network file systems do not keep SQLite's locks). Nothing is opened for writing.
 */
import { accessSync, closeSync, constants, existsSync, openSync, readFileSync, readSync, realpathSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { sqlitePath } from '../connect.js';
import { fail, ok, warn, type DoctorFinding } from './report.js';

/** File systems whose locks SQLite cannot rely on (POSIX advisory locks over the network). */
const NETWORK_FS = /^(nfs\d?|cifs|smb\d?|smbfs|fuse\.sshfs|9p|ceph|glusterfs|fuse\.glusterfs|afs|davfs|fuse\.s3fs|virtiofs)$/;

/** The first 100 bytes of the file (the SQLite header). */
function header(path: string): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(100);
    const n = readSync(fd, buf, 0, 100, 0);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** The mount (point, type) holding `path`, from /proc/mounts; undefined when not on Linux. */
function mountOf(path: string): { point: string; type: string } | undefined {
  let table: string;
  try {
    table = readFileSync('/proc/mounts', 'utf8');
  } catch {
    return undefined;
  }
  let best: { point: string; type: string } | undefined;
  for (const line of table.split('\n')) {
    const [, rawPoint, type] = line.split(' ');
    if (!rawPoint || !type) continue;
    const point = rawPoint.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    const inside = path === point || path.startsWith(point.endsWith('/') ? point : `${point}/`);
    if (inside && (!best || point.length >= best.point.length)) best = { point, type };
  }
  return best;
}

function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Every SQLite check for `url`. */
export function checkSqlite(url: string): DoctorFinding[] {
  const path = sqlitePath(url);
  if (!existsSync(path)) {
    return [fail('sqlite.file', `no such database: ${path} does not exist (doctor does not create it)`, 'Check the path: every process must name the same file. The driver creates it at the first connect().')];
  }
  if (!statSync(path).isFile()) return [fail('sqlite.file', `${path} is not a regular file`, 'Check the path.')];
  const findings: DoctorFinding[] = [];
  const head = header(path);
  if (head.length === 0) {
    findings.push(ok('sqlite.file', `${path} exists and is empty (the driver sets it up at the first connect())`));
  } else if (head.length < 100 || head.subarray(0, 16).toString('latin1') !== 'SQLite format 3\0') {
    return [fail('sqlite.file', `${path} is not a SQLite database (no "SQLite format 3" header)`, 'Check the path: it names another file.')];
  } else {
    findings.push(ok('sqlite.file', `${path}: a SQLite 3 database`));
    // Header bytes 18 and 19: file format write / read version, 1 = rollback journal, 2 = WAL.
    const wal = head[18] === 2 && head[19] === 2;
    findings.push(
      wal
        ? ok('sqlite.journal-mode', 'journal mode WAL (file header): readers never wait for the writer')
        : warn('sqlite.journal-mode', 'journal mode is not WAL (file header: rollback journal): the dlock driver switches the file to WAL when it opens it; a file that stays in rollback mode is used by something else, whose readers block lock operations', 'Let the dlock driver own the file (it sets WAL), or run PRAGMA journal_mode=WAL on it.'),
    );
  }
  const dir = dirname(path);
  const canWrite = writable(path) && writable(dir);
  findings.push(
    canWrite
      ? ok('sqlite.permissions', `${path} and its directory are writable by this process (the WAL and shared-memory files live beside it)`)
      : fail('sqlite.permissions', `${writable(path) ? 'the directory' : 'the file'} is not writable by this process (uid ${process.getuid?.() ?? '?'}): every lock operation is a write`, `Give the lock processes write access to ${path} and to ${dir}.`),
  );
  const mount = mountOf(realpathSync(path));
  if (!mount) findings.push(ok('sqlite.filesystem', 'not measured: no /proc/mounts on this system'));
  else if (NETWORK_FS.test(mount.type)) {
    findings.push(fail('sqlite.filesystem', `${path} is on ${mount.point} (${mount.type}), a network file system: SQLite's file locks are not reliable there, so two processes (or hosts) can both hold a lock`, 'Keep the database on a local disk of the one host that runs the lock processes; for several hosts use a server engine (redis://, postgres://, ...).'));
  } else {
    findings.push(ok('sqlite.filesystem', `${path} is on ${mount.point} (${mount.type}), a local file system`));
  }
  findings.push(ok('clock', 'same host: the database has no clock of its own'));
  return findings;
}
