/**
 * The HTTP/2 connections behind an `etcd3` client, so that the driver's `close()` can wait until
 * they are really closed.
 *
 * Why: `Etcd3.close()` (grpc-js `Channel.close()`) only starts a graceful shutdown and gives no way
 * to learn when it ends. The connection closes once the server answered the GOAWAY by closing its
 * side; grpc-js then schedules a (ref'd) `setImmediate` to destroy the session. On a busy machine
 * the server takes its time, so all of that happens after `close()` resolved: work left pending by
 * a closed client (seen as "Immediate" entries in `process.getActiveResourcesInfo()`).
 *
 * Neither etcd3 nor grpc-js exposes the connections, so they are found through grpc-js internals
 * (1.8 to 1.14: Etcd3 `pool.hosts[].cachedServices` -> `Client.getChannel()` -> `internalChannel`
 * -> `wrappedSubchannels` -> `getRealSubchannel()` -> `transport.session`). Every step is checked:
 * when the shape differs, nothing is found and `close()` does not wait (what it did before).
 * The driver gives its own client a channel option of its own, so that grpc-js does not share these
 * connections with other clients in the process (its global subchannel pool would), which would
 * keep them open after this driver closed.
 */
import type { Etcd3 } from 'etcd3';

/** The part of a Node `ClientHttp2Session` used here. */
export interface ClosingConnection {
  readonly destroyed: boolean;
  once(event: 'close', listener: () => void): unknown;
}

/** The open HTTP/2 sessions of `client` (empty when none, or when grpc-js internals differ). */
export function openConnections(client: Etcd3): ClosingConnection[] {
  const found = new Set<ClosingConnection>();
  try {
    const hosts = field(field(client, 'pool'), 'hosts');
    if (!Array.isArray(hosts)) return [];
    for (const host of hosts) {
      const services = field(host, 'cachedServices');
      if (typeof services !== 'object' || services === null) continue;
      for (const service of Object.values(services)) {
        const getChannel = field(service, 'getChannel');
        if (typeof getChannel !== 'function') continue;
        const wrapped = field(field(getChannel.call(service), 'internalChannel'), 'wrappedSubchannels');
        if (!(wrapped instanceof Set)) continue;
        for (const wrapper of wrapped) {
          const real = field(wrapper, 'getRealSubchannel');
          if (typeof real !== 'function') continue;
          const session = field(field(real.call(wrapper), 'transport'), 'session');
          if (isConnection(session) && !session.destroyed) found.add(session);
        }
      }
    }
  } catch {
    // an unexpected shape: nothing to wait for
  }
  return [...found];
}

function field(o: unknown, name: string): unknown {
  return typeof o === 'object' && o !== null ? (o as Record<string, unknown>)[name] : undefined;
}

function isConnection(o: unknown): o is ClosingConnection {
  return typeof field(o, 'once') === 'function' && typeof field(o, 'destroyed') === 'boolean';
}

/** The part of a grpc-js client stream used by {@link stopStream}. */
export interface StoppableStream {
  end(): unknown;
  cancel(): void;
}

/**
 * Stop one of our streams (keep-alive, watch) at once. Our side is ended first: etcd3's own 'error'
 * handler on its streams takes a CANCELLED error on a still writable stream for a failed
 * connection and closes every channel of that member (`resetAllServices`), which would cut the
 * other calls' connection (and leave that shutdown to finish after `close()`).
 */
export function stopStream(s: StoppableStream): void {
  try {
    s.end();
  } catch {
    // already ended or destroyed
  }
  s.cancel();
}
