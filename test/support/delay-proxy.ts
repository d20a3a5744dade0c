/**
 * A TCP proxy on a loopback port that forwards every byte to a target after a configurable delay
 * (both directions, order kept), to make replies arrive late without touching the server. It can
 * also blackhole (hold every byte, both directions, until healed: what a dropped route does to a
 * TCP stream whose retransmits get through once it heals) and reset every connection (RST).
 * Hand-written because no maintained Node library does "delay bytes" (toxiproxy is a Go
 * server); it is a few lines over node:net. No vitest imports: usable by tests and benchmarks.
 */
import { createServer, connect, type Socket } from 'node:net';

export interface DelayProxy {
  /** The proxy's port on 127.0.0.1 (chosen by the kernel: listening on port 0 cannot race). */
  readonly port: number;
  /** `redis://127.0.0.1:<port>` (convenience for Redis targets). */
  readonly url: string;
  /** Delay of each direction, in ms, for bytes read from now on. */
  setDelay(ms: number): void;
  readonly delayMs: number;
  /** Hold every byte from now on (both directions) until `blackhole(false)`, then deliver them in order. */
  blackhole(on: boolean): void;
  /** Reset (TCP RST) every open connection, both sides; new connections are served as before. */
  reset(): void;
  /** Close the listener and every connection. Idempotent. */
  close(): Promise<void>;
}

/** What the pipes of one proxy share: their timers, the blackhole flag, and how to restart their pumps. */
interface Pipes {
  readonly timers: Set<NodeJS.Timeout>;
  readonly pumps: Set<() => void>;
  held: boolean;
}

/** Copy `from` to `to`, each chunk `delay()` ms after it was read, in order (one queue, one timer); nothing while held. */
function pipeDelayed(from: Socket, to: Socket, delay: () => number, pipes: Pipes): void {
  const { timers } = pipes;
  const queue: Array<{ at: number; chunk: Buffer | null }> = [];
  let timer: NodeJS.Timeout | undefined;
  const pump = (): void => {
    if (timer) timers.delete(timer);
    timer = undefined;
    if (pipes.held) return;
    while (queue.length > 0 && (queue[0]?.at ?? 0) <= Date.now()) {
      const { chunk } = queue.shift() ?? { chunk: null };
      if (to.destroyed) return;
      if (chunk) to.write(chunk);
      else to.end();
    }
    const head = queue[0];
    if (head) {
      timer = setTimeout(pump, Math.max(0, head.at - Date.now()));
      timers.add(timer);
    }
  };
  const push = (chunk: Buffer | null): void => {
    const last = queue.at(-1)?.at ?? 0;
    queue.push({ at: Math.max(Date.now() + delay(), last), chunk });
    if (!timer) pump();
  };
  pipes.pumps.add(pump);
  from.on('close', () => pipes.pumps.delete(pump));
  from.on('data', (chunk: Buffer) => push(chunk));
  from.on('end', () => push(null));
}

/**
 * Start a delaying proxy to `targetPort` on 127.0.0.1, listening on `port` (default: one the
 * kernel picks; a given one lets a test start the proxy after its clients were told the address).
 */
export function startDelayProxy(targetPort: number, opts: { delayMs?: number; targetHost?: string; port?: number } = {}): Promise<DelayProxy> {
  let delayMs = opts.delayMs ?? 0;
  const sockets = new Set<Socket>();
  const pipes: Pipes = { timers: new Set(), pumps: new Set(), held: false };
  const { timers } = pipes;
  const server = createServer((client) => {
    const upstream = connect(targetPort, opts.targetHost ?? '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    pipeDelayed(client, upstream, () => delayMs, pipes);
    pipeDelayed(upstream, client, () => delayMs, pipes);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        reject(new Error('delay proxy: no port'));
        return;
      }
      let closed: Promise<void> | undefined;
      resolve({
        port: address.port,
        url: `redis://127.0.0.1:${address.port}`,
        setDelay: (ms) => {
          delayMs = ms;
        },
        get delayMs() {
          return delayMs;
        },
        blackhole: (on) => {
          pipes.held = on;
          if (!on) for (const pump of [...pipes.pumps]) pump();
        },
        reset: () => {
          for (const s of [...sockets]) s.resetAndDestroy();
        },
        close: () => {
          closed ??= new Promise<void>((done) => {
            for (const t of timers) clearTimeout(t);
            timers.clear();
            for (const s of sockets) s.destroy();
            sockets.clear();
            server.close(() => done());
          });
          return closed;
        },
      });
    });
  });
}
