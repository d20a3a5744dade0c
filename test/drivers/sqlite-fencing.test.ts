/**
 * Fencing with SQLite locks (the paused-holder cases, test/support/paused-holder-cases.ts; the
 * counter lives in Redis behind FencedRedisHash): the frozen holder's lease row expires during a
 * pause past its TTL, the lock moves on, and the newer holder reads before the stale write.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, inject } from 'vitest';
import { describePausedHolder } from '../support/paused-holder-cases.js';

const dir = mkdtempSync(join(tmpdir(), 'dlock-sqlite-fencing-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describePausedHolder({
  name: 'sqlite',
  url: () => `sqlite:${join(dir, 'locks.db')}`,
  counter: 'redis',
  counterUrl: () => inject('redisUrl'),
  ttlMs: 600,
  longPauseMs: 900,
  longReason: 'expired',
});
