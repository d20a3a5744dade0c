/**
 * A forked chaos worker (run with `--unhandled-rejections=strict --import tsx`: an unhandled
 * rejection kills it with a non-zero exit, which the harness reports). argv[2] is a JSON
 * {@link ChaosWorkerSpec}. It takes and gives back holds of any primitive when told (see
 * protocol.ts), and appends every step to its JSON-lines history file with
 * `process.hrtime.bigint()` (CLOCK_MONOTONIC, shared by every process of the host; libfaketime
 * runs leave it alone), synchronously, so that the history survives a kill -9.
 */
import { appendFileSync } from 'node:fs';
import { connect } from '../../src/connect.js';
import type { LockClient } from '../../src/core/client.js';
import { fillOthers, hold, type Held } from './primitives.js';
import type { ChaosCommand, ChaosEvent, ChaosReply, ChaosWorkerSpec } from './protocol.js';

const spec = JSON.parse(process.argv[2] ?? '{}') as ChaosWorkerSpec;
const pid = process.pid;
const now = (): string => process.hrtime.bigint().toString();

function record(e: Omit<ChaosEvent, 'pid' | 't'> & { t?: string }): string {
  const t = e.t ?? now();
  appendFileSync(spec.history, `${JSON.stringify({ pid, ...e, t })}\n`);
  return t;
}

function send(m: ChaosReply): void {
  if (process.connected) process.send?.(m);
}

const codeOf = (e: unknown): string => {
  const c = (e as { code?: unknown } | undefined)?.code;
  return typeof c === 'string' ? c : e instanceof Error ? e.name : String(e);
};

let client: LockClient | undefined;
const holds = new Map<number, { held: Held; released: boolean }>();
const pending = new Map<number, AbortController>();

async function onHold(c: Extract<ChaosCommand, { type: 'hold' }>): Promise<void> {
  client ??= await connect(spec.url);
  const abort = new AbortController();
  pending.set(c.id, abort);
  const o = { ttlMs: c.ttlMs, waitMs: c.waitMs, signal: abort.signal, fair: c.fair };
  try {
    if (c.fill) await fillOthers(client, c.primitive, c.key, o);
    record({ op: c.primitive, key: c.key, phase: 'request', cycle: c.id });
    const held = await hold(client, c.primitive, c.key, o);
    const tokens = held.tokens.map(String);
    const t = record({ op: c.primitive, key: c.key, phase: 'acquired', cycle: c.id, token: tokens[0], tokens });
    const entry = { held, released: false };
    holds.set(c.id, entry);
    held.signal.addEventListener('abort', () => {
      if (entry.released) return;
      const code = codeOf(held.signal.reason);
      const at = record({ op: c.primitive, key: c.key, phase: 'lost', cycle: c.id, code });
      send({ type: 'lost', id: c.id, code, t: at });
    });
    const lastId = c.issue ? held.issue?.(c.issue).toString() : undefined;
    send({ type: 'held', id: c.id, tokens, t, lastId });
  } catch (e) {
    record({ op: c.primitive, key: c.key, phase: 'failed', cycle: c.id, code: codeOf(e) });
    send({ type: 'failed', id: c.id, code: codeOf(e), message: e instanceof Error ? e.message : String(e) });
  } finally {
    pending.delete(c.id);
  }
}

async function onRelease(id: number): Promise<void> {
  const h = holds.get(id);
  if (!h) throw new Error(`release of hold ${id}, which this worker does not have`);
  // The critical section ends here, before the release request is sent.
  const t = record({ op: 'release', phase: 'released', cycle: id, stillHeld: h.held.isHeld() });
  h.released = true;
  const ok = await h.held.release();
  holds.delete(id);
  send({ type: 'released', id, ok, t });
}

async function onClose(): Promise<void> {
  await client?.close();
  client = undefined;
  await new Promise<void>((r) => setImmediate(r));
  await new Promise<void>((r) => setImmediate(r));
  send({ type: 'closed', resources: process.getActiveResourcesInfo() });
}

process.on('message', (c: ChaosCommand) => {
  const work =
    c.type === 'hold'
      ? onHold(c)
      : c.type === 'release'
        ? onRelease(c.id)
        : c.type === 'abort'
          ? Promise.resolve(pending.get(c.id)?.abort())
          : c.type === 'now'
            ? Promise.resolve(send({ type: 'now', wallMs: Date.now() }))
            : onClose();
  work.catch((e: unknown) => {
    send({ type: 'error', pid, message: e instanceof Error ? `${e.name}: ${e.message}\n${e.stack ?? ''}` : String(e) });
    process.exitCode = 1;
  });
});
// Never outlive the test process.
process.on('disconnect', () => process.exit(3));
send({ type: 'ready', pid });
