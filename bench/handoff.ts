/**
 * handoff: one holder, one waiter (two instances of the library: separate connections). The
 * waiter is already waiting; we time from the holder calling release() to the waiter's acquire
 * resolving, with `process.hrtime.bigint()`.
 *
 * The holder releases at a random phase of the waiter's retry loop: it holds for
 * 5 ms + uniform(0, max(10 ms, the library's retry period)) after the waiter started waiting,
 * so a poller is caught anywhere in its sleep, as in real life.
 *
 * The floor, in the same loop: before each handoff, one PING on a connection of its own after an
 * idle pause drawn like dlock's release pause (5 ms + uniform(0, 10 ms)). A direct handoff costs
 * one such round trip at least (release -> server -> grant message), so `p50 / pingAfterIdleP50`
 * is how far a library is from the floor, measured under the same load at the same moments.
 *
 * The carriers' own floor, for dlock's rows (`floorBlpopP50`, `floorPubsubP50`): the same pause and release on two bare
 * connections, without any lock: a waiter blocked in BLPOP woken by an LPUSH, and a subscriber
 * woken by a PUBLISH (a direct handoff's wake-up can be no cheaper than the faster of the two).
 * One of each after every timed dlock handoff, so both floors see the same load at the same moments.
 *
 * The floor of a SAFE direct handoff (`floorScriptPubsubP50`, `floorScriptBlpopP50`), measured the
 * same way: the release script of the `pubsub-direct-floor` / `blocking-floor` rows (bench/libs.ts
 * `handoffScript`: GET the owner and compare, LPOP the head, INCR the fence, SET the key to the head
 * with its TTL, then PUBLISH the grant to the head's subscriber, or LPUSH it to the head's list,
 * where the head waits in BLPOP), timed from the script's send to the head hearing the grant. No
 * library can hand a lock over safely for less than such a script's server time on top of the bare
 * wake-up: these are the floor the 1.5× PING target is judged against.
 *
 * A second, shorter series releases 1 ms + uniform(0, 3 ms) after the waiter started (a waiter
 * that has waited less than dlock's 5 ms barging bound, whose holder does not come back):
 * `shortWaitP50`.
 *
 * Also measured: Redis commands per handoff (everything the two instances send during the timed
 * handoffs, divided by their number) and the cost of waiting (commands/s on the server while the
 * holder keeps the lock for `idleMs` and one waiter waits).
 */
import { randomBytes } from 'node:crypto';
import { handoffScript, type LibSpec } from './libs.js';
import { delay, msBetween, now, quantile, type ServerMonitor } from './support.js';

export interface HandoffOptions {
  handoffs: number;
  warmup: number;
  idleMs: number;
}

export interface HandoffResult {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  commandsPerHandoff: number;
  idleCommandsPerSecond: number;
  /** PING round trip p50 after a 5–15 ms idle pause, interleaved with the timed handoffs. */
  pingAfterIdleP50: number;
  /** PING round trip p50 back to back on the same connection (a busy connection). */
  pingBusyP50: number;
  /** Handoff p50 when the release comes 1–4 ms after the waiter started (see above). */
  shortWaitP50: number;
  /** Bare BLPOP woken by LPUSH after the same pause, p50 ms (NaN: not measured for this library). */
  floorBlpopP50: number;
  /** Bare SUBSCRIBE woken by PUBLISH after the same pause, p50 ms (NaN: not measured). */
  floorPubsubP50: number;
  /** The minimal safe release script (see the header) granting to a subscriber, p50 ms (NaN: not measured). */
  floorScriptPubsubP50: number;
  /** The same script granting to a waiter blocked in BLPOP, p50 ms (NaN: not measured). */
  floorScriptBlpopP50: number;
}

/** The bare wake-ups of the header's "floor" (two connections each, no lock). */
async function bareFloors(url: string): Promise<{
  sample(): Promise<void>;
  blpop: number[];
  pubsub: number[];
  scriptPubsub: number[];
  scriptBlpop: number[];
  close(): Promise<void>;
}> {
  const { Redis } = await import('ioredis');
  const [blocker, pusher, subscriber] = [new Redis(url), new Redis(url), new Redis(url)];
  const channel = `bench:handoff:floor:${process.pid}:${Math.random()}`;
  const list = `${channel}:list`;
  // The safe handoff scripts' names (bench/libs.ts GRANT_BY): the head `<hex>:1` hears on `<hex>:grants` or `<lock>:w:<head>`.
  const hex = randomBytes(8).toString('hex');
  const [lock, queue, head, grants] = [`${channel}:lock`, `${channel}:queue`, `${hex}:1`, `${hex}:grants`];
  let heard: (() => void) | undefined;
  subscriber.on('message', () => heard?.());
  await subscriber.subscribe(channel, grants);
  await Promise.all([blocker.ping(), pusher.ping()]);
  const sha = { publish: String(await pusher.script('LOAD', handoffScript('pubsub'))), lpush: String(await pusher.script('LOAD', handoffScript('blpop'))) };
  const blpop: number[] = [];
  const pubsub: number[] = [];
  const scriptPubsub: number[] = [];
  const scriptBlpop: number[] = [];
  /** Hold the lock as 'holder' with 'waiter' queued, pause, then time the safe release until the waiter hears it. */
  const safeRelease = async (mode: 'publish' | 'lpush', into: number[]): Promise<void> => {
    await pusher.multi().set(lock, 'holder', 'PX', 10_000).del(queue).rpush(queue, head).exec();
    const granted = mode === 'publish' ? new Promise<void>((resolve) => (heard = resolve)) : blocker.blpop(`${lock}:w:${head}`, 30);
    await delay(5 + Math.random() * 10);
    const t = now();
    let at: bigint | undefined;
    const [answer] = await Promise.all([
      pusher.evalsha(sha[mode], 2, lock, queue, 'holder', 10_000),
      granted.then(() => (at = now())),
    ]);
    if (answer !== 2) throw new Error(`bench handoff floor: the safe release script answered ${String(answer)}, not a handoff`);
    into.push(msBetween(t, at ?? now()));
  };
  return {
    blpop,
    pubsub,
    scriptPubsub,
    scriptBlpop,
    async sample() {
      const popped = blocker.blpop(list, 30);
      await delay(5 + Math.random() * 10);
      let t = now();
      let got: bigint | undefined;
      await Promise.all([pusher.lpush(list, 'x'), popped.then(() => (got = now()))]);
      blpop.push(msBetween(t, got ?? now()));
      const message = new Promise<void>((resolve) => (heard = resolve));
      await delay(5 + Math.random() * 10);
      t = now();
      let at: bigint | undefined;
      await Promise.all([pusher.publish(channel, 'x'), message.then(() => (at = now()))]);
      pubsub.push(msBetween(t, at ?? now()));
      await safeRelease('publish', scriptPubsub);
      await safeRelease('lpush', scriptBlpop);
    },
    async close() {
      await pusher.del(lock, queue, `${lock}:fence`, list).catch(() => undefined);
      await Promise.all([blocker, pusher, subscriber].map((c) => c.quit().then(() => undefined, () => c.disconnect())));
    },
  };
}

export async function handoffOnce(spec: LibSpec, url: string, monitor: ServerMonitor, opts: HandoffOptions, tag: string): Promise<HandoffResult> {
  const holder = await spec.create(url);
  const waiter = await spec.create(url);
  const { Redis } = await import('ioredis');
  // A redlock:// URL (bench/redlock.ts): PING its first node.
  const pingUrl = url.startsWith('redlock://') ? `redis://${url.slice('redlock://'.length).split(',')[0] ?? ''}` : url;
  const ping = new Redis(pingUrl);
  const floors = spec.id === 'dlock' ? await bareFloors(pingUrl) : undefined;
  let timing = false;
  let floorCommands = 0;
  try {
    await ping.ping();
    const pings: number[] = [];
    const key = `bench:handoff:${spec.id}:${tag}`;
    const phaseMs = Math.max(10, spec.pollMs);
    const run = async (n: number, holdMs: () => number = () => 5 + Math.random() * phaseMs): Promise<number[]> => {
      const latencies: number[] = [];
      for (let i = 0; i < n; i++) {
        await delay(5 + Math.random() * 10);
        const p0 = now();
        await ping.ping();
        pings.push(msBetween(p0, now()));
        const held = await holder.acquire(key);
        let gotAt: bigint | undefined;
        const waiting = waiter.acquire(key).then((h) => {
          gotAt = now();
          return h;
        });
        await delay(holdMs());
        if (gotAt !== undefined) throw new Error(`${spec.name}: the waiter got the lock while it was held`);
        const releasedAt = now();
        const releasing = held.release();
        const got = await waiting;
        await releasing;
        latencies.push(msBetween(releasedAt, gotAt ?? now()));
        await got.release();
        if (timing && floors) {
          // The floors' own commands are counted apart and left out of commands/handoff.
          const f0 = await monitor.commands();
          await floors.sample();
          floorCommands += (await monitor.commands()) - f0;
        }
      }
      return latencies;
    };

    await run(opts.warmup);
    pings.length = 0;
    timing = true;
    const c0 = await monitor.commands();
    const latencies = await run(opts.handoffs);
    const c1 = await monitor.commands();
    timing = false;
    latencies.sort((a, b) => a - b);
    const pingsTimed = pings.splice(0);
    pingsTimed.sort((a, b) => a - b);
    const short = await run(Math.max(20, Math.round(opts.handoffs / 2)), () => 1 + Math.random() * 3);
    short.sort((a, b) => a - b);
    const busy: number[] = [];
    for (let i = 0; i < 100; i++) {
      const p0 = now();
      await ping.ping();
      busy.push(msBetween(p0, now()));
    }
    busy.sort((a, b) => a - b);

    // The cost of waiting: the lock is held, one waiter waits, nothing changes. The holder does
    // not renew meanwhile (dlock renews a third of the TTL in, sometimes inside the window: its
    // renewal is the holder's cost, not the waiter's; the peers renew later or never).
    const held = await holder.acquire(key, { renew: false });
    const waiting = waiter.acquire(key);
    await delay(250); // let the waiter settle (first try, subscription)
    const i0 = await monitor.commands();
    const t0 = now();
    await delay(opts.idleMs);
    const i1 = await monitor.commands();
    const idleSeconds = msBetween(t0, now()) / 1000;
    await held.release();
    await (await waiting).release();

    return {
      p50: quantile(latencies, 0.5),
      p90: quantile(latencies, 0.9),
      p99: quantile(latencies, 0.99),
      max: latencies[latencies.length - 1] ?? Number.NaN,
      // Less the one PING per handoff of the floor measurement and the bare floors' commands.
      commandsPerHandoff: (c1 - c0 - opts.handoffs - floorCommands) / opts.handoffs,
      idleCommandsPerSecond: (i1 - i0) / idleSeconds,
      pingAfterIdleP50: quantile(pingsTimed, 0.5),
      pingBusyP50: quantile(busy, 0.5),
      shortWaitP50: quantile(short, 0.5),
      floorBlpopP50: floors ? quantile([...floors.blpop].sort((a, b) => a - b), 0.5) : Number.NaN,
      floorPubsubP50: floors ? quantile([...floors.pubsub].sort((a, b) => a - b), 0.5) : Number.NaN,
      floorScriptPubsubP50: floors ? quantile([...floors.scriptPubsub].sort((a, b) => a - b), 0.5) : Number.NaN,
      floorScriptBlpopP50: floors ? quantile([...floors.scriptBlpop].sort((a, b) => a - b), 0.5) : Number.NaN,
    };
  } finally {
    await Promise.all([holder.close(), waiter.close(), ping.quit().then(() => undefined, () => ping.disconnect()), floors?.close()]);
  }
}
