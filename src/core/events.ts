/**
 * The client's event stream: the one seam for metrics, traces, dashboards and tests.
 *
 * Cheap when nobody listens: the client asks {@link LockEvents.has} before it builds an event, so
 * an acquire/release cycle with no listener allocates nothing for it. A listener that throws never
 * breaks the client (the error is dropped). Listeners run synchronously, in the order they were
 * added; keep them short (hand heavy work to a queue).
 */
import type { LockLostReason } from '../errors.js';
import type { SessionState } from '../drivers/driver.js';

/** What every lock event names. */
export interface LockEventBase {
  /** The lock's key. */
  readonly key: string;
  /** The acquisition's owner id (`host:pid:client:seq`). */
  readonly owner: string;
  /** The driver's name (`redis`, `etcd`, ...). */
  readonly engine: string;
}

/** How a wait ended without a grant. */
export type WaitOutcome = 'timeout' | 'aborted' | 'closed' | 'unavailable';

/** Every event of {@link LockEvents}, by name. */
export interface LockEventMap {
  /** A lock was granted. `waitMs`: from the acquire call to the grant; `waited`: it had to wait. */
  acquired: LockEventBase & { readonly token: bigint; readonly waitMs: number; readonly waited: boolean; readonly reentrant: boolean };
  /** An acquire found the lock busy and started waiting. */
  waiting: LockEventBase;
  /** A wait (or a single try that was refused) ended without a grant. */
  'not-acquired': LockEventBase & { readonly outcome: WaitOutcome | 'busy'; readonly waitMs: number; readonly error?: unknown };
  /** A hold was released. `ok`: the engine still had it (the release took effect). */
  released: LockEventBase & { readonly token: bigint; readonly holdMs: number; readonly ok: boolean };
  /** A hold was lost (its `lease.signal` aborted) with this reason. */
  lost: LockEventBase & { readonly token: bigint; readonly holdMs: number; readonly reason: LockLostReason; readonly error: Error };
  /** A renewal of this hold failed (it is retried until the local deadline). */
  'renewal-failed': LockEventBase & { readonly token: bigint; readonly error: unknown };
  /** The engine handed the lock to this waiter directly (no extra round trip). */
  'handed-over': LockEventBase & { readonly token: bigint };
  /** The engine failed a request (during a wait, a release, an inspect...). */
  unavailable: { readonly engine: string; readonly key?: string; readonly operation: string; readonly error: unknown };
  /** The driver's session changed state (session engines only). */
  session: { readonly engine: string; readonly state: SessionState };
}

/** The name of an event. */
export type LockEventName = keyof LockEventMap;

/** A listener of event `K`. */
export type LockEventListener<K extends LockEventName> = (event: LockEventMap[K]) => void;

/** See the file header. */
export class LockEvents {
  private readonly listeners = new Map<LockEventName, Set<(event: never) => void>>();

  /** Hear every `name` event; returns the function that stops it. */
  on<K extends LockEventName>(name: K, listener: LockEventListener<K>): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(listener);
    return () => this.off(name, listener);
  }

  /** Stop hearing `name` with `listener`. */
  off<K extends LockEventName>(name: K, listener: LockEventListener<K>): void {
    const set = this.listeners.get(name);
    if (!set) return;
    set.delete(listener);
    if (set.size === 0) this.listeners.delete(name);
  }

  /** Whether anyone listens to `name` (build the event only then). */
  has(name: LockEventName): boolean {
    return this.listeners.has(name);
  }

  /** Tell every listener of `name`; a listener that throws never breaks the caller. */
  emit<K extends LockEventName>(name: K, event: LockEventMap[K]): void {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const l of [...set]) {
      try {
        (l as LockEventListener<K>)(event);
      } catch {
        // a listener never breaks the client
      }
    }
  }

  /** Drop every listener (close()). */
  clear(): void {
    this.listeners.clear();
  }
}
