/**
 * Deletion watches for waiters, multiplexed on one etcd watch stream per driver.
 *
 * Hand-written on etcd3's raw `watchClient.watch()` stream instead of etcd3's `WatchManager`,
 * because that manager (etcd3 1.1.2) arms ref'd reconnect timers whenever its stream ends,
 * including after the last watcher was cancelled and after `close()` (so a process is kept alive
 * for a moment after the driver closed), and it throws from a stream handler on a response it
 * cannot match. Waiters need much less: "wake me once this key is deleted". Here a failed stream
 * wakes every waiter (saying it can no longer tell) instead of reconnecting on a timer; each
 * waiter reads the queue again and watches again, which opens a new stream.
 *
 * The stream asks etcd to require a leader (gRPC metadata `hasleader: true`, what Go's
 * `clientv3.WithRequireLeader` sends): a member cut off from its peers (while clients still reach
 * it) keeps an ordinary watch stream open and silent, so a waiter watching through it would
 * never hear the deletion the majority makes; with the metadata, the member fails the stream
 * once it has had no leader for a few election timeouts, and the waiters read again through
 * another member (test/drivers/etcd-watch-leader.test.ts). A member the client cannot reach at
 * all is found by the HTTP/2 keep-alive pings (see the driver's constructor).
 */
import type { Etcd3, IWatchResponse } from 'etcd3';
import { etcd3 } from './peer.js';
import { stopStream } from './connections.js';

type WatchStream = Awaited<ReturnType<Etcd3['watchClient']['watch']>>;
type CallOptions = NonNullable<Parameters<Etcd3['watchClient']['watch']>[0]>;
type Interceptor = NonNullable<CallOptions['interceptors']>[number];

/** The part of a grpc-js call's metadata the interceptor touches. */
interface SettableMetadata {
  set(key: string, value: string): void;
}

/**
 * A grpc-js client interceptor that adds `hasleader: true` to the call's metadata (see the file
 * header). It wraps the next call in a Proxy that changes `start` alone, so it needs nothing of
 * grpc-js itself (etcd3's dependency, not ours).
 */
export const requireLeader: Interceptor = (options, nextCall) => {
  const call = nextCall(options) as ReturnType<Interceptor>;
  return new Proxy(call, {
    get(target, prop, receiver) {
      if (prop === 'start') {
        return (metadata: SettableMetadata, ...rest: unknown[]) => {
          metadata.set('hasleader', 'true');
          return (target.start as (...a: unknown[]) => unknown).call(target, metadata, ...rest);
        };
      }
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
};

/** See the file header. */
export class DeletionWatches {
  private stream: Promise<WatchStream> | undefined;
  /** Open watches by the watch id we gave them. */
  private readonly waits = new Map<string, (how: 'created' | 'deleted' | 'unknown') => void>();
  private nextId = 1;
  private closed = false;

  constructor(private readonly client: Etcd3) {}

  /** Number of open watches. */
  get size(): number {
    return this.waits.size;
  }

  /**
   * Watch `key` for its deletion from now on. `ready` resolves once etcd confirmed the watch (or
   * it failed): a deletion after that is certain to call `wake`. `wake` is called once: with
   * `true` on the deletion, with `false` when the watch can no longer tell (stream failed, watch
   * cancelled by the server), so that the waiter reads again. `cancel()` is idempotent. Watches
   * of one driver share one stream, whose events come in revision order.
   *
   * "From now", not from the revision the waiter read: etcd serves a watch that starts at a past
   * revision from its slow catch-up path (a ~100 ms loop), and under contention the revision moves
   * on between the read and the watch. Waiters confirm `ready`, then re-read instead.
   */
  watch(key: Buffer, wake: (deleted: boolean) => void): { ready: Promise<void>; cancel: () => void } {
    const id = String(this.nextId++);
    let done = false;
    let created: () => void = () => undefined;
    const ready = new Promise<void>((resolve) => (created = resolve));
    const fire = (how: 'created' | 'deleted' | 'unknown'): void => {
      created();
      if (how === 'created' || done) return;
      done = true;
      this.waits.delete(id);
      wake(how === 'deleted');
    };
    this.waits.set(id, fire);
    const stream = this.open();
    stream.then(
      (s) => {
        // Server-chosen ids would need one create/answer handshake at a time; our own ids do not.
        if (!done) s.write({ create_request: { key, filters: [etcd3().FilterType.Noput], watch_id: id } });
      },
      () => fire('unknown'),
    );
    const cancel = (): void => {
      created();
      if (done) return;
      done = true;
      this.waits.delete(id);
      stream.then(
        (s) => {
          if (this.stream === stream && !this.closed) s.write({ cancel_request: { watch_id: id } });
        },
        () => undefined,
      );
    };
    return { ready, cancel };
  }

  /** End the stream (open watches are woken). Idempotent. */
  close(): void {
    this.closed = true;
    this.fail();
  }

  private open(): Promise<WatchStream> {
    if (this.closed) return Promise.reject(new Error('watches closed'));
    if (this.stream) return this.stream;
    const stream = this.client.watchClient.watch({ interceptors: [requireLeader] });
    this.stream = stream;
    stream.then(
      (s) => {
        if (this.stream !== stream) {
          stopStream(s);
          return;
        }
        s.on('data', (res: IWatchResponse) => this.onResponse(res));
        s.on('error', () => this.fail(stream));
        s.on('end', () => this.fail(stream));
      },
      () => this.fail(stream),
    );
    return stream;
  }

  private onResponse(res: IWatchResponse): void {
    const fire = this.waits.get(String(res.watch_id));
    if (!fire) return;
    // A deletion (the only events we asked for), or the server cancelled the watch.
    if (res.events.length > 0) fire('deleted');
    else if (res.canceled) fire('unknown');
    else if (res.created) fire('created');
  }

  /** The stream (or the current one) failed: wake every waiter so that each re-checks. */
  private fail(which?: Promise<WatchStream>): void {
    const stream = this.stream;
    if (which !== undefined && which !== stream) return;
    this.stream = undefined;
    stream?.then(
      (s) => stopStream(s),
      () => undefined,
    );
    for (const fire of [...this.waits.values()]) fire('unknown');
  }
}
