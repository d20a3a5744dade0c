/**
 * The primitives every chaos scenario runs over, through the public API only: how to take one
 * hold of each on a key, what a conflicting hold is (the one that must wait for it), and why an
 * engine cannot run it (read from `driver.info.modes`, never from a list of engines).
 *
 * The semaphore has 3 permits; a scenario fills the other 2 first where it needs the one under
 * test to block others. On a driver without the `permits` mode it is the per-permit construction
 * (one lock per permit): the case name says which.
 */
import type { LockClient } from '../../src/core/client.js';
import type { AdmissionMode } from '../../src/drivers/driver.js';
import { IdGenerator } from '../../src/ids/generator.js';
import { LeaderElection } from '../../src/primitives/election.js';
import { MultiLock } from '../../src/primitives/multi-lock.js';
import { ReadWriteLock } from '../../src/primitives/read-write-lock.js';
import { Semaphore } from '../../src/primitives/semaphore.js';

export const PRIMITIVE_NAMES = ['mutex', 'read', 'write', 'semaphore', 'multi', 'election', 'snowflake'] as const;
export type PrimitiveName = (typeof PRIMITIVE_NAMES)[number];

export function isPrimitiveName(s: string): s is PrimitiveName {
  return (PRIMITIVE_NAMES as readonly string[]).includes(s);
}

export const SEMAPHORE_PERMITS = 3;

/** One hold of a primitive, whatever it is. */
export interface Held {
  /** Fencing tokens (one per engine key; the snowflake's is its worker slot's). */
  readonly tokens: readonly bigint[];
  readonly signal: AbortSignal;
  isHeld(): boolean;
  /** Local validity left (the Lease's); absent for the primitives that do not expose it. */
  remainingMs?(): number;
  release(): Promise<boolean>;
  /** Snowflake: issue ids (the largest is returned). */
  issue?(n: number): bigint;
}

export interface HoldOptions {
  ttlMs: number;
  waitMs: number;
  signal?: AbortSignal;
  fair?: boolean;
}

/** The admission mode a primitive needs from the driver, if any beyond `exclusive`. */
const NEEDS: Partial<Record<PrimitiveName, AdmissionMode>> = { read: 'shared', write: 'shared' };

/** Why `client`'s driver cannot run `p`, or undefined when it can. */
export function unsupported(client: LockClient, p: PrimitiveName): string | undefined {
  const need = NEEDS[p];
  const modes = client.driver.info.modes ?? ['exclusive'];
  if (need && !modes.includes(need)) return `${client.driver.info.name} does not grant the "${need}" mode (info.modes = ${modes.join(', ')})`;
  return undefined;
}

/** Engine keys a hold of `p` on `key` uses (for leak checks). */
export function keysOf(p: PrimitiveName, key: string): string[] {
  if (p === 'multi') return [`${key}:a`, `${key}:b`, `${key}:c`];
  return [key];
}

function lease(l: { token: bigint; signal: AbortSignal; isHeld(): boolean; remainingMs?(): number; release(): Promise<boolean> }): Held {
  const remaining = l.remainingMs?.bind(l);
  // `signal` through the Lease's getter, read each time: the getter checks the local deadline
  // first, so a process resumed past it sees the signal aborted before its timers have run (a
  // copy taken at acquire time would still say "not aborted" until the renewal timer fires,
  // after whatever I/O callback the resumed process runs first).
  return {
    tokens: [l.token],
    get signal() {
      return l.signal;
    },
    isHeld: () => l.isHeld(),
    release: () => l.release(),
    ...(remaining ? { remainingMs: remaining } : {}),
  };
}

/** Take one hold of `p` on `key`. */
export async function hold(client: LockClient, p: PrimitiveName, key: string, o: HoldOptions): Promise<Held> {
  const opts = { ttlMs: o.ttlMs, waitMs: o.waitMs, signal: o.signal, ...(o.fair === undefined ? {} : { fair: o.fair }) };
  switch (p) {
    case 'mutex':
      return lease(await client.acquire(key, opts));
    case 'read':
      return lease(await new ReadWriteLock(client, key).read.acquire(opts));
    case 'write':
      return lease(await new ReadWriteLock(client, key).write.acquire(opts));
    case 'semaphore':
      return lease(await new Semaphore(client, key, { permits: SEMAPHORE_PERMITS }).acquire(opts));
    case 'multi': {
      const m = await new MultiLock(client, keysOf(p, key)).acquire(opts);
      return {
        tokens: [...m.tokens.values()],
        get signal() {
          return m.signal;
        },
        isHeld: () => m.isHeld(),
        release: () => m.release(),
      };
    }
    case 'election':
      return lease(await new LeaderElection(client, key, { ttlMs: o.ttlMs }).campaign({ waitMs: o.waitMs, signal: o.signal }));
    case 'snowflake': {
      const gen = await IdGenerator.start({ client, name: key, slot: 0, ttlMs: o.ttlMs, waitMs: o.waitMs, signal: o.signal });
      const slot = await client.inspect(gen.workerKey);
      let last = 0n;
      let answer: boolean | undefined;
      return {
        tokens: [slot?.token ?? -1n],
        signal: gen.signal,
        isHeld: () => gen.isActive(),
        // Like Lease.release: true when it still held its slot, and the same answer every time.
        release: async () => {
          answer ??= gen.isActive();
          await gen.close();
          return answer;
        },
        issue: (n) => {
          for (let i = 0; i < n; i++) last = gen.next();
          return last;
        },
      };
    }
  }
}

/**
 * The hold that must wait for a hold of `p` (the one a successor takes): the write side for a
 * read lock, otherwise the same primitive (a semaphore's caller fills the other permits first).
 */
export function contender(p: PrimitiveName): PrimitiveName {
  return p === 'read' ? 'write' : p;
}

/** Fill the semaphore's other permits (so that the hold under test blocks the next taker). */
export async function fillOthers(client: LockClient, p: PrimitiveName, key: string, o: HoldOptions): Promise<Held[]> {
  if (p !== 'semaphore') return [];
  const held: Held[] = [];
  for (let i = 1; i < SEMAPHORE_PERMITS; i++) held.push(await hold(client, p, key, o));
  return held;
}

/** How the semaphore is built on this driver, for case names. */
export function construction(client: LockClient, p: PrimitiveName): string {
  if (p !== 'semaphore') return '';
  return client.driver.info.modes?.includes('permits') ? ' (permits mode)' : ' (one lock per permit)';
}
