/**
 * Messages between the chaos harness and its forked workers (worker.ts), and the JSON lines of a
 * run's history. Times are `process.hrtime.bigint()` as decimal strings.
 */
import type { PrimitiveName } from './primitives.js';

export interface ChaosWorkerSpec {
  readonly url: string;
  /** The JSON-lines history file the worker appends to. */
  readonly history: string;
}

/** One line of a history file. */
export interface ChaosEvent {
  readonly pid: number;
  /** The primitive (or `release`). */
  readonly op: string;
  readonly key?: string;
  /** `request`: about to wait; `acquired`; `released` (leaving the section, before the release request); `lost`; `failed`. */
  readonly phase: 'request' | 'acquired' | 'released' | 'lost' | 'failed';
  readonly t: string;
  /** Which hold of that worker (the command's id). */
  readonly cycle: number;
  readonly token?: string;
  readonly tokens?: readonly string[];
  readonly code?: string;
  readonly stillHeld?: boolean;
}

/** Harness -> worker. */
export type ChaosCommand =
  | {
      readonly type: 'hold';
      readonly id: number;
      readonly primitive: PrimitiveName;
      readonly key: string;
      readonly ttlMs: number;
      readonly waitMs: number;
      readonly fair?: boolean;
      /** Semaphore: take the other permits first (held until the worker dies). */
      readonly fill?: boolean;
      /** Snowflake: issue this many ids once held (the largest is reported). */
      readonly issue?: number;
    }
  | { readonly type: 'release'; readonly id: number }
  /** Abort a hold still waiting. */
  | { readonly type: 'abort'; readonly id: number }
  /** Report the wall clock (Date.now()), to prove a libfaketime jump took effect. */
  | { readonly type: 'now' }
  /** Close the client and report the handles left. */
  | { readonly type: 'close' };

/** Worker -> harness. */
export type ChaosReply =
  | { readonly type: 'ready'; readonly pid: number }
  | { readonly type: 'held'; readonly id: number; readonly tokens: readonly string[]; readonly t: string; readonly lastId?: string }
  | { readonly type: 'failed'; readonly id: number; readonly code: string; readonly message: string }
  | { readonly type: 'lost'; readonly id: number; readonly code: string; readonly t: string }
  | { readonly type: 'released'; readonly id: number; readonly ok: boolean; readonly t: string }
  | { readonly type: 'closed'; readonly resources: readonly string[] }
  | { readonly type: 'now'; readonly wallMs: number }
  | { readonly type: 'error'; readonly pid: number; readonly message: string };
