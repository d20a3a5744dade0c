/**
 * LeaderElection on real engines: one leader at a time with strictly increasing terms, a lost
 * term stops the leader's work and the candidate campaigns again, stopping gives the term back.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, LockAbortedError, LockLostError, LockTimeoutError } from '../../src/errors.js';
import { LeaderElection } from '../../src/primitives/election.js';
import { connect } from '../../src/connect.js';
import { startRedis } from '../support/redis.js';
import { primitiveEngines } from './engines.js';

const engines = primitiveEngines();
const electionKey = (): string => `election:${randomBytes(4).toString('hex')}`;

describe.each(engines)('LeaderElection on $name', (engine) => {
  it('4 candidates leading in turns: never two leaders at once, terms strictly increase, the leadership changes hands', async () => {
    const key = electionKey();
    const stop = new AbortController();
    const terms: Array<{ candidate: number; term: bigint }> = [];
    let leading = 0;
    let overlaps = 0;
    const elections = await Promise.all(
      Array.from({ length: 4 }, async () => new LeaderElection(await engine.client({ ttlMs: 5000 }), key)),
    );
    const runs = elections.map((election, candidate) =>
      election.lead(
        async (term, signal) => {
          leading += 1;
          if (leading > 1) overlaps += 1;
          terms.push({ candidate, term: term.token });
          expect((await election.leader())?.token).toBe(term.token);
          await sleep(15, undefined, { signal }).catch(() => undefined);
          leading -= 1;
          if (terms.length >= 16) stop.abort();
        },
        { signal: stop.signal },
      ),
    );
    await Promise.all(runs);
    expect(terms.length).toBeGreaterThanOrEqual(16);
    expect(overlaps).toBe(0);
    for (let i = 1; i < terms.length; i++) expect(terms[i]!.term).toBeGreaterThan(terms[i - 1]!.term);
    console.info(`[election:${engine.name}] ${terms.length} terms led by ${new Set(terms.map((t) => t.candidate)).size} of 4 candidates`);
    expect(new Set(terms.map((t) => t.candidate)).size).toBeGreaterThanOrEqual(2);
    expect(elections.reduce((n, e) => n + e.termsWon, 0)).toBe(terms.length);
    // Stopped: every term was given back.
    expect(await elections[0]!.leader()).toBeNull();
  }, 60_000);

  it("a lost term aborts the leader's signal with the lock's reason, and the candidate campaigns again (higher term)", async () => {
    const key = electionKey();
    const election = new LeaderElection(await engine.client(), key, { ttlMs: 200, maxHoldMs: 400 });
    const stop = new AbortController();
    const seen: Array<{ term: bigint; reason: unknown }> = [];
    await election.lead(
      async (term, signal) => {
        await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
        seen.push({ term: term.token, reason: signal.reason });
        if (seen.length === 2) stop.abort();
      },
      { signal: stop.signal },
    );
    expect(seen).toHaveLength(2);
    for (const s of seen) {
      expect(s.reason).toBeInstanceOf(LockLostError);
      expect((s.reason as LockLostError).reason).toBe('max-hold');
    }
    expect(seen[1]!.term).toBeGreaterThan(seen[0]!.term);
    expect(election.termsWon).toBe(2);
  });

  it('campaign: waitMs runs out with LockTimeoutError while another leads; an abort stops it; a resignation elects the next', async () => {
    const key = electionKey();
    const [a, b] = [new LeaderElection(await engine.client(), key), new LeaderElection(await engine.client(), key)];
    const term = await a.campaign();
    expect((await b.leader())?.owner).toBe(term.owner);
    await expect(b.campaign({ waitMs: 200 })).rejects.toBeInstanceOf(LockTimeoutError);
    const ac = new AbortController();
    const aborted = b.campaign({ signal: ac.signal });
    await sleep(50);
    ac.abort();
    await expect(aborted).rejects.toBeInstanceOf(LockAbortedError);
    const next = b.campaign();
    await sleep(50);
    expect(await term.release()).toBe(true); // resign
    const bTerm = await next;
    expect(bTerm.token).toBeGreaterThan(term.token);
    expect((await a.leader())?.owner).toBe(bTerm.owner);
    await bTerm.release();
  });

  it('lead() rejects when the work fails while its term is valid, after giving the term back', async () => {
    const key = electionKey();
    const election = new LeaderElection(await engine.client(), key);
    const boom = new Error('job failed');
    await expect(
      election.lead(
        () => {
          throw boom;
        },
        { signal: new AbortController().signal },
      ),
    ).rejects.toBe(boom);
    expect(await election.leader()).toBeNull();
  });

  it('refuses bad input with InvalidArgumentError', async () => {
    const client = await engine.client();
    expect(() => new LeaderElection(client, '')).toThrow(InvalidArgumentError);
    expect(() => new LeaderElection(client, 'k', { ttlMs: 5 })).toThrow(/ttlMs/);
    const e = new LeaderElection(client, 'k');
    await expect(e.lead(() => undefined, {} as { signal: AbortSignal })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(e.lead(undefined as unknown as () => void, { signal: new AbortController().signal })).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe('LeaderElection across an engine outage', () => {
  it('Redis killed while one candidate leads and another campaigns: the term is lost, nobody throws, a leader is elected after the restart', async () => {
    const first = await startRedis();
    let server = first;
    const stop = new AbortController();
    const clients = await Promise.all([connect(first.url, { ttlMs: 1000 }), connect(first.url, { ttlMs: 1000 })]);
    try {
      const key = electionKey();
      const both = clients.map((c) => new LeaderElection(c, key));
      const lost: unknown[] = [];
      const led: Array<{ candidate: number; at: number }> = [];
      const runs = both.map((e, candidate) =>
        e.lead(
          async (_term, signal) => {
            led.push({ candidate, at: Date.now() });
            await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
            if (!stop.signal.aborted) lost.push(signal.reason);
          },
          { signal: stop.signal },
        ),
      );
      for (let i = 0; i < 100 && led.length === 0; i++) await sleep(20);
      expect(led).toHaveLength(1);
      await first.kill9();
      const downAt = Date.now();
      // Down: the leader's term runs out locally (TTL 1 s); the other keeps campaigning.
      for (let i = 0; i < 250 && lost.length === 0; i++) await sleep(20);
      await sleep(300);
      expect(lost).toHaveLength(1);
      expect((lost[0] as LockLostError).reason).toBe('expired');
      server = await startRedis({ port: first.port });
      for (let i = 0; i < 250 && !led.some((l) => l.at > downAt); i++) await sleep(20);
      expect(led.filter((l) => l.at > downAt)).toHaveLength(1);
      stop.abort();
      await Promise.all(runs);
    } finally {
      stop.abort();
      await Promise.allSettled(clients.map((c) => c.close()));
      await server.stop();
    }
  }, 60_000);
});
