/**
 * A counter kept in an engine, for the paused-holder fencing scenario (test/support/paused-holder.ts):
 * read it, then write it back plus one either fenced (the engine refuses a token lower than one it
 * has accepted, with StaleTokenError) or plain (a blind write that a stale holder can clobber).
 * One module per engine next to this file; `openCounter` loads only the one asked for.
 */
import type { LockDriver } from '../../../src/index.js';

export interface FencedCounter {
  read(): Promise<number>;
  /** Write `value` with `token`; throws StaleTokenError (code DLOCK_STALE_TOKEN) if a higher token wrote. */
  writeFenced(token: bigint, value: number): Promise<void>;
  /** Write `value` blind. */
  writePlain(value: number): Promise<void>;
  /** Extra facts for the parent when the paused holder holds `key` (e.g. its session's server pid). */
  holding?(driver: LockDriver, key: string): Record<string, unknown>;
  close(): Promise<void>;
}

/** `url`: the lock URL (query options such as `?mode=` are ignored); `id`: which counter. */
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
