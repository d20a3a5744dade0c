/**
 * Messages between the test process and forked lock workers (JSON over the IPC channel).
 * Times are `process.hrtime.bigint()` values as decimal strings: CLOCK_MONOTONIC is shared by
 * all processes on one Linux host, so times from different workers are comparable.
 */

import type { Admission } from '../../src/drivers/driver.js';

/** One event in a worker's log. */
export interface LogEntry {
  readonly pid: number;
  /** What the worker did (`lock`). */
  readonly op: string;
  /** `request`: about to wait; `acquired`: granted; `released`: leaving the critical section. */
  readonly phase: 'request' | 'acquired' | 'released';
  /** `process.hrtime.bigint()` as a string. */
  readonly t: string;
  /** Fencing token as a string (acquired/released). */
  readonly token?: string;
  readonly cycle: number;
  /** Set on `released`: whether the lease still considered itself held when leaving. */
  readonly stillHeld?: boolean;
  /** Set on `released`: what `lease.release()` answered. */
  readonly releaseOk?: boolean;
  /**
   * Set on `released`: the lease's signal had aborted (the lease was reported lost) by the time
   * the release answered: a `false` answer is then the loss, told, not a failed release.
   */
  readonly lost?: boolean;
}

/** What a worker does. */
export type WorkerSpec =
  | {
      /** Acquire/hold/release `cycles` times, logging every step. */
      readonly mode: 'loop';
      readonly url: string;
      readonly key: string;
      readonly cycles: number;
      readonly holdMs: number;
      readonly ttlMs: number;
      readonly waitMs: number;
    }
  | {
      /** Acquire once (renewal on), report the token, then hold until killed. */
      readonly mode: 'hold';
      readonly url: string;
      readonly key: string;
      readonly ttlMs: number;
      /** How it holds the key (a read lock, semaphore permits); absent: exclusive. */
      readonly admission?: Admission;
    };

/** Worker -> test process. */
export type WorkerMessage =
  | { readonly type: 'ready'; readonly pid: number }
  | { readonly type: 'held'; readonly pid: number; readonly token: string; readonly owner: string; readonly t: string }
  | { readonly type: 'done'; readonly pid: number; readonly log: readonly LogEntry[] }
  /** Hold mode: the held lease's signal aborted (`code` of its reason, e.g. DLOCK_LOCK_LOST). */
  | { readonly type: 'lost'; readonly pid: number; readonly code: string; readonly t: string }
  | { readonly type: 'error'; readonly pid: number; readonly message: string };

/** Test process -> worker. */
export interface GoMessage {
  readonly type: 'go';
  /** Start at this `process.hrtime.bigint()` value. */
  readonly at: string;
}
