import type { ChangeWatch } from '../drivers/driver.js';

/**
 * The one ChangeWatch implementation drivers share: a latch that remembers a change seen
 * between two `next()` calls (so a release that lands while the waiter is busy trying is not
 * lost), a timer bounded by `maxMs`, and abort handling. Drivers call `changed()` from their
 * notification source (pub/sub message, file watch, in-process event).
 */
export class LatchWatch implements ChangeWatch {
  private pending = false;
  private wake: ((v: boolean) => void) | undefined;
  private closed = false;

  constructor(private readonly onClose: (w: LatchWatch) => void) {}

  /** A change happened: wake the current `next()`, or remember it for the next one. */
  changed(): void {
    if (this.wake) this.wake(true);
    else this.pending = true;
  }

  next(maxMs: number, signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    if (this.pending) {
      this.pending = false;
      return Promise.resolve(true);
    }
    return new Promise<boolean>((resolve, reject) => {
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
