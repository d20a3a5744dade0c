/**
 * The core's side of {@link TrySetDriver.passOn}: a release that left its key to bargers (the
 * driver answered `'left'`) is passed on to the key's queue head at the next event-loop turn,
 * unless this client asks for that key again first (a loop that re-acquires keeps its key
 * without a cross-process wake-up), and before the driver closes ({@link PassOn.flush}).
 *
 * Every release the core sends goes through {@link PassOn.release}, and every try it sends for
 * a key first calls {@link PassOn.asked}.
 */
import type { LockDriver } from '../drivers/driver.js';

export class PassOn {
  /** Keys released with `'left'` in this event-loop turn, not asked for again since. */
  private readonly left = new Set<string>();
  private scheduled = false;

  constructor(private readonly driver: LockDriver) {}

  /** The driver's release, as a boolean: `'left'` is released, its key passed on later. */
  release(key: string, owner: string): Promise<boolean> {
    return this.driver.release(key, owner).then((r) => {
      if (r !== 'left') return r;
      this.later(key);
      return true;
    });
  }

  /** This client asks for `key` again: it keeps what it left to bargers (no pass-on). */
  asked(key: string): void {
    if (this.left.size > 0) this.left.delete(key);
  }

  /** Keys waiting for their pass-on (for tests). */
  get pending(): number {
    return this.left.size;
  }

  /**
   * Pass on every key still left, now; settles when the driver answered each (an engine error
   * is dropped: the head's due-time try remains).
   */
  flush(): Promise<void> {
    const d = this.driver;
    if (this.left.size === 0 || d.kind !== 'try-set' || !d.passOn) {
      this.left.clear();
      return Promise.resolve();
    }
    const sent: Promise<void>[] = [];
    for (const key of this.left) sent.push(d.passOn(key).catch(() => undefined));
    this.left.clear();
    return Promise.all(sent).then(() => undefined);
  }

  private later(key: string): void {
    this.left.add(key);
    if (this.scheduled) return;
    this.scheduled = true;
    // setImmediate: after the continuation of this release (and of the others of this turn), so
    // that an acquire that follows a release in the same turn counts as asking again.
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }
}
