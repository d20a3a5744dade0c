/**
 * The client's event stream: the one seam for metrics, traces, dashboards and tests.
 *
 * Cheap when nobody listens: the client asks {@link LockEvents.has} before it builds an event, so
 * an acquire/release cycle with no listener allocates nothing for it. A listener that throws never
 * breaks the client (the error is dropped). Listeners run synchronously, in the order they were
 * added; keep them short (hand heavy work to a queue).
 */
import type { LockLostReason } from '../errors.js';
import type { Admission, SessionState } from '../drivers/driver.js';

/** What every lock event names. */
export interface LockEventBase {
  /** The lock's key. */
  readonly key: string;
  /** The acquisition's owner id (`host:pid:client:seq`). */
  readonly owner: string;
  /** The driver's name (`redis`, `etcd`, ...). */
  readonly engine: string;
  /** How the acquisition shares the key: `exclusive` (a mutex, a write side), `shared` (a read side) or `permits` (a semaphore). */
  readonly mode: Admission['mode'];
  /** Permits asked for or held (semaphores); 1 in the other modes. */
  readonly permits: number;
}

/** How a wait ended without a grant. */
export type WaitOutcome = 'timeout' | 'aborted' | 'closed' | 'unavailable';

/** Every event of {@link LockEvents}, by name. */
export interface LockEventMap {
  /** A lock was granted. `waitMs`: from the acquire call to the grant; `waited`: it had to wait. */
  acquired: LockEventBase & {
    /** The fencing token of the hold. */
    readonly token: bigint;
    /** Ms from the acquire call to this event. */
    readonly waitMs: number;
    /** Whether it had to wait. */
    readonly waited: boolean;
    /** Whether it re-entered a hold of the same owner. */
    readonly reentrant: boolean;
  };
  /** An acquire found the lock busy and started waiting. */
  waiting: LockEventBase;
  /** A wait (or a single try that was refused) ended without a grant. */
  'not-acquired': LockEventBase & {
    /** How it ended: `busy` for a refused single try. */
    readonly outcome: WaitOutcome | 'busy';
    /** Ms from the acquire call to this event. */
    readonly waitMs: number;
    /** The error behind it, if any. */
    readonly error?: unknown;
  };
  /** A hold was released. `ok`: the engine still had it (the release took effect). */
  released: LockEventBase & {
    /** The fencing token of the hold. */
    readonly token: bigint;
    /** How long the lock was held, in ms. */
    readonly holdMs: number;
    /** Whether the engine still had it. */
    readonly ok: boolean;
  };
  /** A hold was lost (its `lease.signal` aborted) with this reason. */
  lost: LockEventBase & {
    /** The fencing token of the hold. */
    readonly token: bigint;
    /** How long the lock was held, in ms. */
    readonly holdMs: number;
    /** Why it was lost. */
    readonly reason: LockLostReason;
    /** The error behind it, if any. */
    readonly error: Error;
  };
  /** A renewal of this hold failed (it is retried until the local deadline). */
  'renewal-failed': LockEventBase & {
    /** The fencing token of the hold. */
    readonly token: bigint;
    /** The error behind it, if any. */
    readonly error: unknown;
  };
  /** The engine handed the lock to this waiter directly (no extra round trip). */
  'handed-over': LockEventBase & {
    /** The fencing token of the hold. */
    readonly token: bigint;
  };
  /** The engine failed a request (during a wait, a release, an inspect...). */
  unavailable: {
    /** The driver name (`redis`, `zookeeper`, ...). */
    readonly engine: string;
    /** The lock key, when the request was about one. */
    readonly key?: string;
    /** What was being done (`acquire`, `release`, `inspect`, ...). */
    readonly operation: string;
    /** The error behind it, if any. */
    readonly error: unknown;
  };
  /** The driver's session changed state (session engines only). */
  session: {
    /** The driver name (`redis`, `zookeeper`, ...). */
    readonly engine: string;
    /** The new session state. */
    readonly state: SessionState;
  };
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
