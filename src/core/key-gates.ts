/**
 * Local FIFO turns per key: waiters of one key in this process queue here, so that only the
 * head talks to the engine (10,000 local waiters cost one engine waiter) and a local releaser
 * cannot barge ahead of local waiters. Used by the core's wait loop (src/core/wait-loop.ts) for
 * try-set and server-blocking engines.
 */
export class KeyGates {
  private readonly gates = new Map<string, Array<() => void>>();

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
      const go = (): void => {
        signal.removeEventListener('abort', onAbort);
        resolve(true);
      };
      const onAbort = (): void => {
        const i = queue.indexOf(go);
        if (i >= 0) queue.splice(i, 1);
        reject(signal.reason as Error);
      };
      queue.push(go);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** End this key's turn: the next local waiter goes. */
  leave(key: string): void {
    const queue = this.gates.get(key);
    if (!queue) return;
    const next = queue.shift();
    if (next) next();
    else this.gates.delete(key);
  }
}
