/**
 * A counter kept in a fenced resource, for the paused-holder fencing scenario
 * (test/support/paused-holder.ts), through dlock's fenced helpers: read it, then write it back
 * plus one with the lease's token. The read is either fenced (read-and-advance: the read raises
 * the resource's fence to the token, the helpers' default) or plain (the fence does not move: the
 * control run that shows why the read must be fenced); the write is always fenced.
 * One module per store next to this file; `openCounter` loads only the one asked for.
 */
import type { LockDriver } from '../../../src/index.js';

export interface FencedCounter {
  /** Read with `token`, raising the fence to it; StaleTokenError (DLOCK_STALE_TOKEN) if a higher token read or wrote. */
  readFenced(token: bigint): Promise<number>;
  /** Read without moving the fence (the helper's opt-out for observers). */
  readPlain(): Promise<number>;
  /** Write `value` with `token`; StaleTokenError (DLOCK_STALE_TOKEN) if a higher token read or wrote. */
  writeFenced(token: bigint, value: number): Promise<void>;
  /** Extra facts for the parent when the paused holder holds `key` (e.g. its session's server pid). */
  holding?(driver: LockDriver, key: string): Record<string, unknown>;
  close(): Promise<void>;
}

/** `url`: the store's URL (query options such as `?mode=` are ignored); `id`: which counter. */
export type OpenCounter = (url: string, id: string) => Promise<FencedCounter>;

const COUNTERS = {
  redis: () => import('./redis.js'),
  postgres: () => import('./postgres.js'),
  mysql: () => import('./mysql.js'),
} satisfies Record<string, () => Promise<{ open: OpenCounter }>>;

export type CounterKind = keyof typeof COUNTERS;

export function isCounterKind(kind: string): kind is CounterKind {
  return Object.hasOwn(COUNTERS, kind);
}

export async function openCounter(kind: CounterKind, url: string, id: string): Promise<FencedCounter> {
  const { open } = await COUNTERS[kind]();
  return open(url, id);
}
