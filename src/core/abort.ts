/**
 * Small helpers that keep waits bounded and never leak a rejection.
 */
import { setMaxListeners } from 'node:events';

/** The reason a {@link WaitScope} aborts with when its deadline passes. */
export const DEADLINE = Symbol('dlock.deadline');

/** One wait: the caller's signals and a deadline folded into a single AbortSignal. */
export class WaitScope {
  private readonly linked: LinkedSignal;
  private readonly timer: NodeJS.Timeout | undefined;
  constructor(signals: readonly (AbortSignal | undefined)[], readonly deadline: number, now: number) {
    this.linked = linkSignals(...signals);
    // A ref'd timer: waiting for a lock is a legitimate reason to keep the process alive.
    if (!this.linked.signal.aborted) {
      this.timer = setTimeout(() => this.linked.abort(DEADLINE), Math.max(0, deadline - now));
    }
  }
  get signal(): AbortSignal {
    return this.linked.signal;
  }
  /** True when the scope ended because its deadline passed (not the caller's abort). */
  get timedOut(): boolean {
    return this.linked.signal.aborted && this.linked.signal.reason === DEADLINE;
  }
  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.linked.dispose();
  }
}

/**
 * Race `work` against `signal`. If the signal wins, `onLate` receives the value `work` resolves
 * to later (so a grant that arrives after we gave up can be released), and a late rejection is
 * swallowed instead of becoming an unhandled rejection.
 */
export function raceAbort<T>(work: Promise<T>, signal: AbortSignal, onLate?: (value: T) => void): Promise<T> {
  if (signal.aborted) {
    work.then(onLate, () => undefined);
    return Promise.reject(signal.reason as Error);
  }
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const onAbort = (): void => {
      settled = true;
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        if (settled) onLate?.(v);
        else resolve(v);
      },
      (e: Error) => {
        signal.removeEventListener('abort', onAbort);
        if (!settled) reject(e);
      },
    );
  });
}

/** Full-jitter exponential backoff: a random delay in [base, min(cap, base * 2^attempt)]. */
export function backoffMs(attempt: number, baseMs = 10, capMs = 1000): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 16));
  return baseMs + Math.floor(Math.random() * Math.max(0, ceiling - baseMs));
}

/** A signal linked to others: see {@link linkSignals}. */
export interface LinkedSignal {
  readonly signal: AbortSignal;
  /** Abort it now (if not yet aborted). */
  abort(reason: unknown): void;
  /** Stop listening to the inputs. Idempotent. */
  dispose(): void;
}

/**
 * An AbortController whose signal may carry any number of abort listeners without Node printing
 * MaxListenersExceededWarning: for dlock's own signals that every concurrent wait listens to.
 */
export function unboundedController(): AbortController {
  const c = new AbortController();
  setMaxListeners(0, c.signal);
  return c;
}

/**
 * One signal that aborts when any input does (with that input's reason), with listeners removed
 * by `dispose()`. Undefined inputs are skipped. (Used instead of `AbortSignal.any`, whose
 * dependants of a long-lived signal leaked on Node 20.)
 */
export function linkSignals(...signals: readonly (AbortSignal | undefined)[]): LinkedSignal {
  const controller = new AbortController();
  const cleanups: Array<() => void> = [];
  const dispose = (): void => {
    for (const c of cleanups.splice(0)) c();
  };
  for (const s of signals) {
    if (!s) continue;
    if (s.aborted) {
      controller.abort(s.reason);
      dispose();
      break;
    }
    const onAbort = (): void => controller.abort(s.reason);
    s.addEventListener('abort', onAbort, { once: true });
    cleanups.push(() => s.removeEventListener('abort', onAbort));
  }
  return { signal: controller.signal, abort: (reason) => controller.abort(reason), dispose };
}

/** Wait for `work` to settle, at most `ms`; never rejects. */
export function settleWithin(work: Promise<unknown>, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    work.then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      () => {
        clearTimeout(timer);
        resolve();
      },
    );
  });
}
