/** Messages between the ids tests and their forked id workers (JSON over IPC). */
import type { LayoutOptions } from '../../src/ids/layout.js';

/** What an id worker runs. */
export interface IdWorkerSpec {
  /**
   * `generator`: IdGenerator.start (leased worker id, marks). `snowflake`: new Snowflake with a
   * fixed workerId (no lease). `naive`: a Date.now()-based generator like most npm packages
   * (resets its sequence whenever the ms changes, follows the wall clock backwards).
   */
  readonly kind: 'generator' | 'snowflake' | 'naive';
  /** Append every id to this file, 8 bytes each (BigInt64, little endian), chunk by chunk. */
  readonly out: string;
  readonly url?: string;
  readonly name?: string;
  readonly slot?: number;
  readonly ttlMs?: number;
  readonly waitMs?: number;
  readonly workerId?: number;
  readonly layout?: LayoutOptions;
  readonly maxBorrowMs?: number;
  readonly maxWaitMs?: number;
  readonly onClockBehind?: 'wait' | 'throw';
  /** Also run a naive generator (same process, same clocks), interleaved chunk by chunk, into this file. */
  readonly controlOut?: string;
  /** Ids per chunk (one `setImmediate` between chunks, or `intervalMs`). */
  readonly chunk: number;
  /** Sleep this long between chunks instead of just yielding (keeps the volume of ids small). */
  readonly intervalMs?: number;
  /** Stop after this many ids; without it, run until `stop`. */
  readonly count?: number;
  /** Set up (claim the worker id) only after `go`, so that claims race. Default false. */
  readonly claimAfterGo?: boolean;
  /** After `started`, wait for `run` before generating (so that no worker burns CPU while others claim). */
  readonly waitForRun?: boolean;
}

export type IdWorkerMessage =
  | { readonly type: 'ready'; readonly pid: number; readonly workerId: number | null }
  | { readonly type: 'started'; readonly pid: number; readonly workerId: number }
  | {
      readonly type: 'done';
      readonly pid: number;
      readonly workerId: number;
      readonly issued: number;
      readonly controlIssued: number;
      /** Errors thrown by next(), by code. */
      readonly errors: Readonly<Record<string, number>>;
      readonly firstErrors: Readonly<Record<string, string>>;
    }
  | { readonly type: 'error'; readonly pid: number; readonly message: string };

export type IdTestMessage = { readonly type: 'go' } | { readonly type: 'run' } | { readonly type: 'stop' };
