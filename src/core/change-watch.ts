import type { ChangeWatch, HandedOver } from '../drivers/driver.js';

/**
 * The one ChangeWatch implementation drivers share: a latch that remembers a change seen
 * between two `next()` calls (so a release that lands while the waiter is busy trying is not
 * lost), a timer bounded by `maxMs`, and abort handling. Drivers call `changed()` from their
 * notification source (pub/sub message, file watch, in-process event).
 */
export class LatchWatch implements ChangeWatch {
  private pending: boolean | HandedOver = false;
  private wake: ((v: boolean | HandedOver) => void) | undefined;
  private closed = false;

  constructor(private readonly onClose: (w: LatchWatch) => void) {}

  /** A change happened: wake the current `next()`, or remember it for the next one. */
  changed(): void {
    if (this.wake) this.wake(true);
    else if (this.pending === false) this.pending = true;
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
      return Promise.resolve(v);
    }
    return new Promise<boolean | HandedOver>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        this.wake = undefined;
      };
      const onAbort = (): void => {
        done();
        reject(signal.reason as Error);
      };
      const timer = setTimeout(() => {
        done();
        resolve(false);
      }, Math.max(0, maxMs));
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
