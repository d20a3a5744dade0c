/**
 * The libraries compared, behind one small surface: `acquire(key)` waits with the library's own
 * waiting strategy and resolves a handle whose `release()` gives the lock back.
 *
 * Every library gets its own connection(s) per instance, a 10 s TTL, and otherwise its defaults
 * (the waiting knobs that would make it give up are raised: waiting must not fail in a benchmark).
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import Redlock4 from 'redlock';
import Redlock5Untyped from 'redlock5';
import { Mutex } from 'redis-semaphore';
import type Redlock5Typed from '../node_modules/redlock5/dist/index.js';
import { delay } from './support.js';

const Redlock5 = Redlock5Untyped as typeof Redlock5Typed;

export const TTL_MS = 10_000;

export type Scenario = 'handoff' | 'uncontended' | 'contended';

export interface Held {
  release(): Promise<unknown>;
}

export interface Locker {
  /**
   * Wait (the library's own way) until `key` is held. `renew: false`: a library that renews its
   * holds by itself (dlock) does not, for this hold (the handoff bench's idle window, so that
   * the commands it counts are the waiter's; `TTL_MS` outlives that window).
   */
  acquire(key: string, options?: { renew?: boolean }): Promise<Held>;
  close(): Promise<void>;
}

export interface LibSpec {
  /** Short name for `--only` and JSON. */
  readonly id: string;
  /** Row label. */
  readonly name: string;
  /** Period of the library's retry loop in ms (0: event-driven); sets the random release phase in `handoff`. */
  readonly pollMs: number;
  readonly scenarios: readonly Scenario[];
  /** Only run when named in `--only` (experiments, not part of the standard comparison). */
  readonly extra?: boolean;
  create(url: string): Promise<Locker>;
}

/** Where dlock is loaded from: the built package (default) or the TypeScript sources via tsx. */
export type DlockSource = 'dist' | 'src';

type DlockCore = typeof import('../src/index.js');
type DlockRedis = typeof import('../src/drivers/redis/index.js');

let dlockSource: DlockSource = 'dist';
let dlockModules: Promise<[DlockCore, DlockRedis]> | undefined;

export function useDlockFrom(source: DlockSource): void {
  dlockSource = source;
  dlockModules = undefined;
}

/** The file dlock's main entry is loaded from (printed with the results). */
export function dlockEntry(): string {
  return fileURLToPath(new URL(dlockSource === 'dist' ? '../dist/esm/index.js' : '../src/index.ts', import.meta.url));
}

function loadDlock(): Promise<[DlockCore, DlockRedis]> {
  // Typed from src; loaded from dist unless --src, so type-checking never needs a build.
  dlockModules ??=
    dlockSource === 'dist'
      ? Promise.all([
          import(new URL('../dist/esm/index.js', import.meta.url).href) as Promise<DlockCore>,
          import(new URL('../dist/esm/drivers/redis/index.js', import.meta.url).href) as Promise<DlockRedis>,
        ])
      : Promise.all([import('../src/index.js'), import('../src/drivers/redis/index.js')]);
  return dlockModules;
}

async function connect(url: string, options: { enableAutoPipelining?: boolean } = {}): Promise<Redis> {
  const redis = new Redis(url, { lazyConnect: true, ...options });
  redis.on('error', () => undefined);
  await redis.connect();
  return redis;
}

async function quit(redis: Redis): Promise<void> {
  await redis.quit().catch(() => redis.disconnect());
}

const UNLOCK_LUA = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

interface WithUnlock {
  benchUnlock(key: string, token: string): Promise<number>;
}

const FENCED_LOCK_LUA = `if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return redis.call('INCR', KEYS[2]) end return 0`;

interface WithFencedLock extends WithUnlock {
  benchFencedLock(key: string, fence: string, token: string, ttlMs: number): Promise<number>;
}

/**
 * The baseline: what people write by hand. `SET key token NX PX ttl`; release by a Lua
 * compare-and-delete (EVALSHA through ioredis `defineCommand`); wait by polling every 10 ms.
 *
 * `fenced`: not a library but the `contended` floor of a fenced lock: the same lock with the
 * least a fencing token adds, `SET NX PX` and `INCR <key>:fence` in one script (a token per
 * grant, as every dlock grant has), its waits as unbounded as the baseline's. What it loses
 * against the baseline in the same run is the price of the token alone.
 */
async function handRolled(url: string, autoPipelining: boolean, fenced = false): Promise<Locker> {
  const redis = await connect(url, { enableAutoPipelining: autoPipelining });
  redis.defineCommand('benchUnlock', { numberOfKeys: 1, lua: UNLOCK_LUA });
  redis.defineCommand('benchFencedLock', { numberOfKeys: 2, lua: FENCED_LOCK_LUA });
  const cmd = redis as unknown as WithFencedLock;
  const prefix = randomBytes(8).toString('hex');
  let seq = 0;
  const take = async (key: string, token: string): Promise<boolean> =>
    fenced ? (await cmd.benchFencedLock(key, `${key}:fence`, token, TTL_MS)) > 0 : (await redis.set(key, token, 'PX', TTL_MS, 'NX')) === 'OK';
  return {
    async acquire(key) {
      const token = `${prefix}:${++seq}`;
      for (;;) {
        if (await take(key, token)) return { release: () => cmd.benchUnlock(key, token) };
        await delay(10);
      }
    },
    close: () => quit(redis),
  };
}

async function dlock(url: string, ownClient?: { enableAutoPipelining: boolean }, fair = false): Promise<Locker> {
  const [{ LockClient }, { RedisDriver }] = await loadDlock();
  // As users run it: `{ url }` (the driver opens its own ioredis connection), renewal on.
  // `ownClient`: the experiment of passing `{ client }`, an ioredis connection made here.
  const redis = ownClient ? await connect(url, ownClient) : undefined;
  const client = new LockClient(new RedisDriver(redis ? { client: redis } : { url }), { ttlMs: TTL_MS, fair });
  return {
    acquire: (key, options) => client.acquire(key, options?.renew === false ? { renew: false } : {}),
    close: async () => {
      await client.close();
      if (redis) await quit(redis);
    },
  };
}

async function redlock4(url: string): Promise<Locker> {
  const redis = await connect(url);
  // Defaults: retryDelay 200 ms, retryJitter 100 ms; retryCount -1 = retry forever.
  const redlock = new Redlock4([redis], { retryCount: -1 });
  redlock.on('clientError', () => undefined);
  return {
    acquire: (key) => redlock.lock(key, TTL_MS).then((lock) => ({ release: () => lock.unlock() })),
    close: () => quit(redis),
  };
}

async function redlock5(url: string): Promise<Locker> {
  const redis = await connect(url);
  const redlock = new Redlock5([redis], { retryCount: -1 });
  return {
    acquire: (key) => redlock.acquire([key], TTL_MS).then((lock) => ({ release: () => lock.release() })),
    close: () => quit(redis),
  };
}

async function semaphore(url: string, retryInterval: number | undefined): Promise<Locker> {
  const redis = await connect(url);
  const options = { lockTimeout: TTL_MS, acquireTimeout: 120_000, ...(retryInterval === undefined ? {} : { retryInterval }) };
  return {
    async acquire(key) {
      // One Mutex per acquisition, as its README does (each gets a fresh random identifier).
      const mutex = new Mutex(redis, key, options);
      await mutex.acquire();
      return { release: () => mutex.release() };
    },
    close: () => quit(redis),
  };
}

const RELEASE_PUBLISH_LUA = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]); redis.call('PUBLISH', ARGV[2], '1'); return 1 end return 0`;

interface WithUnlockPublish {
  benchUnlockPublish(key: string, token: string, channel: string): Promise<number>;
}

/**
 * Not a library: the least a pub/sub waiter can do (dlock's design with nothing around it), as
 * the floor of `handoff` on this machine in this run. SET NX PX; on failure, subscribe, try again,
 * then sleep until a release message (or the TTL) and retry. Release = compare-and-delete + PUBLISH.
 */
async function pubsubFloor(url: string): Promise<Locker> {
  const redis = await connect(url);
  const sub = await connect(url);
  redis.defineCommand('benchUnlockPublish', { numberOfKeys: 1, lua: RELEASE_PUBLISH_LUA });
  const unlock = redis as unknown as WithUnlockPublish;
  const wakers = new Map<string, Set<() => void>>();
  const subscribed = new Set<string>();
  sub.on('message', (channel: string) => {
    for (const wake of wakers.get(channel) ?? []) wake();
  });
  const prefix = randomBytes(8).toString('hex');
  let seq = 0;
  return {
    async acquire(key) {
      const token = `${prefix}:${++seq}`;
      const channel = `${key}:released`;
      const held = { release: () => unlock.benchUnlockPublish(key, token, channel) };
      if ((await redis.set(key, token, 'PX', TTL_MS, 'NX')) === 'OK') return held;
      let pending = false;
      let wake: (() => void) | undefined;
      const waker = (): void => {
        if (wake) wake();
        else pending = true;
      };
      let set = wakers.get(channel);
      if (!set) wakers.set(channel, (set = new Set()));
      set.add(waker);
      try {
        if (!subscribed.has(channel)) {
          await sub.subscribe(channel);
          subscribed.add(channel);
        }
        for (;;) {
          if ((await redis.set(key, token, 'PX', TTL_MS, 'NX')) === 'OK') return held;
          if (pending) {
            pending = false;
            continue;
          }
          await new Promise<void>((resolve) => {
            const timer = setTimeout(() => wake?.(), TTL_MS);
            wake = () => {
              clearTimeout(timer);
              wake = undefined;
              resolve();
            };
          });
        }
      } finally {
        set.delete(waker);
      }
    },
    close: async () => {
      await Promise.all([quit(redis), quit(sub)]);
    },
  };
}

/**
 * The release of a safe direct handoff, the least such a release can do: never free another
 * owner's lock (GET and compare), give the key to the queue's head with its TTL and a new fencing
 * token (`<key>:fence`), then tell the head (`%GRANT%`). Answers 2 for a handoff, 1 for a key freed,
 * 0 for not the owner.
 */
const HANDOFF_LUA = `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local nxt = redis.call('LPOP', KEYS[2])
if not nxt then redis.call('DEL', KEYS[1]) return 1 end
redis.call('INCR', KEYS[1] .. ':fence')
redis.call('SET', KEYS[1], nxt, 'PX', ARGV[2])
%GRANT%
return 2`;
const TRY_OR_QUEUE_LUA = `if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 0`;
/** How a direct handoff tells the head: a push to the list its BLPOP blocks on, or a PUBLISH on its process channel. */
export const GRANT_BY = {
  blpop: "redis.call('LPUSH', KEYS[1] .. ':w:' .. nxt, '1')",
  pubsub: "redis.call('PUBLISH', string.match(nxt, '^(%x+):') .. ':grants', nxt)",
} as const;

/** The safe direct handoff's release script, granting by `carrier`. KEYS: the lock, its queue; ARGV: owner, TTL ms. */
export function handoffScript(carrier: keyof typeof GRANT_BY): string {
  return HANDOFF_LUA.replace('%GRANT%', GRANT_BY[carrier]);
}

interface WithDirectHandoff {
  benchTryOrQueue(key: string, queue: string, token: string, ttlMs: number): Promise<number>;
  benchHandOff(key: string, queue: string, token: string, ttlMs: number): Promise<number>;
}

/**
 * Not a library: the least a direct handoff can do. The waiter queues its token; the release (one
 * script) gives the key to the queue's head and tells it, so release -> server -> waiter is one
 * hop. `blpop`: the waiter blocks in BLPOP on a list of its own on a connection of its own, and the
 * server's reply to it is the grant (no pub/sub at all). `pubsub`: the grant is PUBLISHed on the
 * waiter's process channel, to which its subscriber connection listens; set beside the BLPOP row,
 * it tells what the carrier costs apart from what a library does around it. Single Redis node,
 * handoff only (no timeouts, no cancel).
 */
async function directHandoffFloor(url: string, carrier: keyof typeof GRANT_BY): Promise<Locker> {
  const redis = await connect(url);
  const waiting = await connect(url);
  redis.defineCommand('benchTryOrQueue', { numberOfKeys: 2, lua: TRY_OR_QUEUE_LUA });
  redis.defineCommand('benchHandOff', { numberOfKeys: 2, lua: handoffScript(carrier) });
  const r = redis as unknown as WithDirectHandoff;
  const prefix = randomBytes(8).toString('hex');
  const granted = new Map<string, () => void>();
  if (carrier === 'pubsub') {
    waiting.on('message', (_channel: string, token: string) => granted.get(token)?.());
    await waiting.subscribe(`${prefix}:grants`);
  }
  let seq = 0;
  return {
    async acquire(key) {
      const token = `${prefix}:${++seq}`;
      const queue = `${key}:queue`;
      const held = { release: () => r.benchHandOff(key, queue, token, TTL_MS) };
      const told = carrier === 'pubsub' ? new Promise<void>((resolve) => granted.set(token, resolve)) : undefined;
      try {
        if ((await r.benchTryOrQueue(key, queue, token, TTL_MS)) === 1) return held;
        await (told ?? waiting.blpop(`${key}:w:${token}`, TTL_MS / 1000));
        return held;
      } finally {
        granted.delete(token);
      }
    },
    close: async () => {
      await Promise.all([quit(redis), quit(waiting)]);
    },
  };
}

const ALL: readonly Scenario[] = ['handoff', 'uncontended', 'contended'];

export const BASELINE_ID = 'hand-rolled';
/** The hand-rolled lock with a fencing token (a floor of `contended`, not a peer). */
export const FENCED_FLOOR_ID = 'fenced-floor';
/** dlock with `fair: true` (strict FIFO). */
export const DLOCK_FAIR_ID = 'dlock-fair';

export const LIBS: readonly LibSpec[] = [
  { id: BASELINE_ID, name: 'hand-rolled ioredis', pollMs: 10, scenarios: ALL, create: (u) => handRolled(u, false) },
  { id: 'dlock', name: 'dlock', pollMs: 0, scenarios: ALL, create: (u) => dlock(u) },
  // The same, strict FIFO (`fair: true`): every grant is a handoff.
  { id: DLOCK_FAIR_ID, name: 'dlock fair: true', pollMs: 0, scenarios: ['handoff', 'contended'], create: (u) => dlock(u, undefined, true) },
  { id: 'redlock4', name: 'redlock@4.2.0', pollMs: 300, scenarios: ALL, create: redlock4 },
  { id: 'redlock5', name: 'redlock@5.0.0-beta.2', pollMs: 300, scenarios: ALL, create: redlock5 },
  { id: 'semaphore', name: 'redis-semaphore', pollMs: 10, scenarios: ALL, create: (u) => semaphore(u, undefined) },
  {
    id: 'semaphore-1ms',
    name: 'redis-semaphore 1 ms',
    pollMs: 1,
    scenarios: ['handoff', 'contended'],
    create: (u) => semaphore(u, 1),
  },
  {
    // Not a library: the baseline plus a fencing token (see handRolled), in the same run.
    id: FENCED_FLOOR_ID,
    name: 'floor: hand-rolled + fencing token',
    pollMs: 10,
    scenarios: ['contended'],
    create: (u) => handRolled(u, false, true),
  },
  {
    // Not a library: the floor of the pub/sub design on this machine, in the same run.
    id: 'pubsub-floor',
    name: 'floor: raw pub/sub + SET NX',
    pollMs: 0,
    scenarios: ['handoff'],
    create: pubsubFloor,
  },
  {
    // Not a library: the same direct handoff as blocking-floor, the grant carried by pub/sub.
    id: 'pubsub-direct-floor',
    name: 'floor: direct handoff, pub/sub',
    pollMs: 0,
    scenarios: ['handoff'],
    create: (u) => directHandoffFloor(u, 'pubsub'),
  },
  {
    // Not a library: the floor of a direct handoff with a blocked command instead of pub/sub.
    id: 'blocking-floor',
    name: 'floor: direct handoff, BLPOP',
    pollMs: 0,
    scenarios: ['handoff'],
    create: (u) => directHandoffFloor(u, 'blpop'),
  },
  {
    // Not a peer: shows how much of a throughput gain is auto-pipelining alone.
    id: 'hand-rolled-ap',
    name: 'hand-rolled + autoPipelining',
    pollMs: 10,
    scenarios: ['uncontended'],
    create: (u) => handRolled(u, true),
  },
  {
    id: 'dlock-client',
    name: 'dlock { client } (no autoPipelining)',
    pollMs: 0,
    scenarios: ALL,
    extra: true,
    create: (u) => dlock(u, { enableAutoPipelining: false }),
  },
  {
    id: 'dlock-client-ap',
    name: 'dlock { client } (autoPipelining)',
    pollMs: 0,
    scenarios: ALL,
    extra: true,
    create: (u) => dlock(u, { enableAutoPipelining: true }),
  },
];

export function libById(id: string): LibSpec {
  const lib = LIBS.find((l) => l.id === id);
  if (!lib) throw new Error(`Unknown library "${id}"; known: ${LIBS.map((l) => l.id).join(', ')}`);
  return lib;
}
