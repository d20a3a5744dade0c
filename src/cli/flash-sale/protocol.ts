/** IPC between the flash-sale parent and its workers (JSON serialization: no bigint on the wire). */

/** What a worker needs; passed as JSON in argv[2]. */
export interface WorkerConfig {
  readonly index: number;
  readonly url: string;
  /** This run's stock and orders in the store: the item plus a run id. */
  readonly item: string;
  readonly lockKey: string;
  readonly lock: boolean;
  /** Buyers this worker runs, and the global number of its first buyer. */
  readonly buyers: number;
  readonly firstBuyer: number;
  readonly ttlMs: number;
  readonly waitMs: number;
  /** Buyer n of a worker starts n x this many ms after the start instant (0: all at once). */
  readonly staggerMs?: number;
}

export type ParentMessage =
  /** Start every buyer at `startNs` on `process.hrtime.bigint()` (CLOCK_MONOTONIC, shared by all processes). */
  { readonly type: 'go'; readonly startNs: string };

export type WorkerMessage =
  | { readonly type: 'ready'; readonly index: number }
  | {
      readonly type: 'progress';
      readonly index: number;
      readonly done: number;
      readonly orders: number;
      /** Lock acquisitions so far (with the lock). */
      readonly locks?: number;
    }
  | {
      readonly type: 'done';
      readonly index: number;
      readonly done: number;
      readonly orders: number;
      /** Lock acquisitions (with the lock). */
      readonly locks?: number;
      /** Lock wait of each buyer in ms (empty without the lock). */
      readonly waitsMs: readonly number[];
      /** How late this worker actually started, in ns after the start instant. */
      readonly lateNs: string;
      /** When its last buyer finished, on `process.hrtime.bigint()`. */
      readonly endNs: string;
    }
  | { readonly type: 'error'; readonly index: number; readonly message: string };

export function isWorkerMessage(m: unknown): m is WorkerMessage {
  return typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string';
}

export function isParentMessage(m: unknown): m is ParentMessage {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === 'go';
}
