import type { ChangeWatch, HandedOver } from '../drivers/driver.js';
import { monotonicNow } from './clock.js';

/**
 * The one ChangeWatch implementation drivers share: a latch that remembers a change seen
 * between two `next()` calls (so a release that lands while the waiter is busy trying is not
 * lost), a timer bounded by `maxMs`, and abort handling. Drivers call `changed()` from their
 * notification source (pub/sub message, file watch, in-process event).
 */
export class LatchWatch implements ChangeWatch {
  private pending: boolean | HandedOver = false;
  private wake: ((v: boolean | HandedOver) => void) | undefined;
  /** While a `next()` sleeps: when its timer fires, and how to bring that time forward. */
  private sleepsUntil = Number.POSITIVE_INFINITY;
  private rearm: ((ms: number) => void) | undefined;
  /** A try that `changed(withinMs)` asked for while nobody slept: due by then. */
  private dueAt = Number.POSITIVE_INFINITY;
  private closed = false;

  constructor(private readonly onClose: (w: LatchWatch) => void) {}

  /**
   * A change happened: wake the current `next()`, or remember it for the next one. With
   * `withinMs` > 0 the change asks for a try no later than that, not at once (a queue head told
   * when its turn is due): the current sleep, or the next one, ends by then.
   */
  changed(withinMs = 0): void {
    if (withinMs <= 0) {
      if (this.wake) this.wake(true);
      else if (this.pending === false) this.pending = true;
      return;
    }
    if (this.rearm) {
      if (monotonicNow() + withinMs < this.sleepsUntil) this.rearm(withinMs);
    } else {
      this.dueAt = Math.min(this.dueAt, monotonicNow() + withinMs);
    }
  }

  /** The engine handed the lock to this waiter: deliver it now or at the next `next()`. */
  granted(token: bigint): void {
    if (this.wake) this.wake({ token });
    else this.pending = { token };
  }

  next(maxMs: number, signal: AbortSignal): Promise<boolean | HandedOver> {
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    if (this.pending !== false) {
      const v = this.pending;
      this.pending = false;
      this.dueAt = Number.POSITIVE_INFINITY;
      return Promise.resolve(v);
    }
    let ms = maxMs;
    if (this.dueAt !== Number.POSITIVE_INFINITY) {
      ms = Math.min(ms, this.dueAt - monotonicNow());
      this.dueAt = Number.POSITIVE_INFINITY;
    }
    return new Promise<boolean | HandedOver>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        this.wake = undefined;
        this.rearm = undefined;
        this.sleepsUntil = Number.POSITIVE_INFINITY;
      };
      const onAbort = (): void => {
        done();
        reject(signal.reason as Error);
      };
      const expire = (v: boolean): (() => void) => () => {
        done();
        resolve(v);
      };
      let timer = setTimeout(expire(false), Math.max(0, ms));
      this.sleepsUntil = monotonicNow() + Math.max(0, ms);
      this.rearm = (sooner) => {
        clearTimeout(timer);
        timer = setTimeout(expire(true), sooner);
        this.sleepsUntil = monotonicNow() + sooner;
      };
      this.wake = (v) => {
        done();
        resolve(v);
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.onClose(this);
  }
}
