/**
 * Child process for {@link startSqliteBlocker}: argv[2] is the database path. Answers
 * `{op:'open'|'lock'|'unlock'}` with `{type:'ok'|'error', op}`; exits with its parent.
 */
import Database from 'better-sqlite3';

const path = process.argv[2];
if (!path) throw new Error('usage: sqlite-blocker.ts PATH');
const db = new Database(path);
db.pragma('busy_timeout = 10000');

process.on('message', (m: { op: string }) => {
  try {
    if (m.op === 'lock') db.exec('BEGIN EXCLUSIVE');
    else if (m.op === 'unlock') db.exec('ROLLBACK');
    else if (m.op !== 'open') throw new Error(`unknown op ${m.op}`);
    process.send?.({ type: 'ok', op: m.op });
  } catch (e) {
    process.send?.({ type: 'error', op: m.op, message: e instanceof Error ? e.message : String(e) });
  }
});
process.on('disconnect', () => process.exit(0));
