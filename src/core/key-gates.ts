/**
 * Local FIFO turns per key: waiters of one key in this process queue here, so that only the
 * head talks to the engine (10,000 local waiters cost one engine waiter) and a local releaser
 * cannot barge ahead of local waiters. Used by the core's wait loop (src/core/wait-loop.ts) for
 * try-set and server-blocking engines.
 *
 * Two ways to queue: {@link KeyGates.take}, for a wait that already has its own signal, and
 * {@link KeyGates.park}, the light one for a wait that has none yet (no caller signal): one
 * entry, one timer and one promise, and nothing else until its turn comes, so that 10,000
 * parked waiters stay a few hundred bytes each.
 */
interface Turn {
  /** Its turn has come: it now holds the key's gate. */
  readonly go: () => void;
  /** Parked turns only: end the wait with `reason` (close()). */
  readonly fail?: (reason: Error) => void;
}

export class KeyGates {
  private readonly gates = new Map<string, Turn[]>();

  /** Number of keys with a turn taken (for tests and inspection). */
  get size(): number {
    return this.gates.size;
  }

  has(key: string): boolean {
    return this.gates.has(key);
  }

  /**
   * Wait for this key's turn; resolves whether we had to queue behind another waiter, rejects
   * with `signal.reason` (and leaves the queue) when it aborts first.
   */
  take(key: string, signal: AbortSignal): Promise<boolean> {
    const queue = this.gates.get(key);
    if (!queue) {
      this.gates.set(key, []);
      return Promise.resolve(false);
    }
    return new Promise<boolean>((resolve, reject) => {
      const turn: Turn = {
        go: () => {
          signal.removeEventListener('abort', onAbort);
          resolve(true);
        },
      };
      const onAbort = (): void => {
        const i = queue.indexOf(turn);
        if (i >= 0) queue.splice(i, 1);
        reject(signal.reason as Error);
      };
      queue.push(turn);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Queue for this key's turn until `deadline` (monotonic ms, read through `now`): resolves
   * `true` once it holds the gate, `false` when the deadline passed first (it has left the
   * queue); rejects with the reason given to {@link failParked}. A key with no turn taken is
   * taken at once.
   */
  park(key: string, deadline: number, now: () => number): Promise<boolean> {
    const queue = this.gates.get(key);
    if (!queue) {
      this.gates.set(key, []);
      return Promise.resolve(true);
    }
    return new Promise<boolean>((resolve, reject) => {
      const leave = (): void => {
        const i = queue.indexOf(turn);
        if (i >= 0) queue.splice(i, 1);
      };
      // A ref'd timer: waiting for a lock is a legitimate reason to keep the process alive.
      const timer = setTimeout(() => {
        leave();
        resolve(false);
      }, Math.max(0, deadline - now()));
      const turn: Turn = {
        go: () => {
          clearTimeout(timer);
          resolve(true);
        },
        fail: (reason) => {
          clearTimeout(timer);
          leave();
          reject(reason);
        },
      };
      queue.push(turn);
    });
  }

  /** End every parked wait with `reason` (close()); waits that took their turn with a signal end through it. */
  failParked(reason: unknown): void {
    for (const queue of this.gates.values()) {
      for (const turn of [...queue]) turn.fail?.(reason as Error);
    }
  }

  /** End this key's turn: the next local waiter goes. */
  leave(key: string): void {
    const queue = this.gates.get(key);
    if (!queue) return;
    const next = queue.shift();
    if (next) next.go();
    else this.gates.delete(key);
  }
}
