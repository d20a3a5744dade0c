/**
 * Admission (issue 11): read-write locks, semaphores with k-permit acquisitions, and the choice
 * between strict FIFO and bounded barging, defined for every driver whose `info.modes` lists the
 * mode (the others must refuse it at construction with UnsupportedModeError, tested here too).
 * Contenders are separate clients with their own engine connections, overlapping in time.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it, type TestContext } from 'vitest';
import type { AdmissionMode, LockDriver } from '../../../src/drivers/driver.js';
import type { Lease } from '../../../src/core/lease.js';
import { InvalidArgumentError, LockAbortedError, LockTimeoutError, UnsupportedModeError } from '../../../src/errors.js';
import { ReadWriteLock } from '../../../src/primitives/read-write-lock.js';
import { Semaphore } from '../../../src/primitives/semaphore.js';
import type { SuiteContext } from './context.js';
import { eventually } from './helpers.js';

interface Section {
  who: number;
  mode: 'read' | 'write';
  start: number;
  end: number;
  token: bigint;
}

/** Pairs of sections that overlap in time where the rule forbids it (a write beside anything). */
function conflicts(sections: readonly Section[]): Array<[Section, Section]> {
  const bad: Array<[Section, Section]> = [];
  for (let i = 0; i < sections.length; i++) {
    for (let j = i + 1; j < sections.length; j++) {
      const a = sections[i]!;
      const b = sections[j]!;
      const overlap = a.start < b.end && b.start < a.end;
      if (overlap && (a.mode === 'write' || b.mode === 'write')) bad.push([a, b]);
    }
  }
  return bad;
}

/** The largest number of sections open at one instant. */
function maxOverlap(sections: readonly Section[]): number {
  const events = sections.flatMap((s) => [
    [s.start, 1],
    [s.end, -1],
  ]);
  events.sort((x, y) => x[0]! - y[0]! || x[1]! - y[1]!);
  let open = 0;
  let most = 0;
  for (const [, d] of events) {
    open += d!;
    most = Math.max(most, open);
  }
  return most;
}

/** How a driver orders waiters (see DriverInfo.fairness). */
function fairnessOf(d: LockDriver): 'fifo' | 'choice' | 'none' {
  return d.info.fairness ?? (d.info.fair ? 'fifo' : 'none');
}

export function defineAdmission(ctx: SuiteContext): void {
  const { factory, newClient, newDriver, uniqueKey } = ctx;
  /**
   * Skip, saying why, when the driver lacks what the test is about (its refusal is tested in
   * 'admission' below); `queue`: the test needs waiters queued on the engine.
   */
  const needs = async (t: TestContext, mode: AdmissionMode, queue = false): Promise<void> => {
    const d = await newDriver();
    if (!(d.info.modes ?? ['exclusive']).includes(mode)) t.skip(`${d.info.name} does not grant ${mode} holds (info.modes); its refusal is tested`);
    if (queue && fairnessOf(d) === 'none') t.skip(`${d.info.name} keeps no queue of waiters (info.fairness none): arrival order is not promised`);
  };

  describe('admission', () => {
    it('drivers without a mode refuse it at construction with UnsupportedModeError', async () => {
      const d = await newDriver();
      const client = await newClient();
      const modes = d.info.modes ?? ['exclusive'];
      if (!modes.includes('shared')) {
        const e = (() => {
          try {
            new ReadWriteLock(client, uniqueKey('rw-refused'));
          } catch (err) {
            return err;
          }
          return undefined;
        })();
        expect(e).toBeInstanceOf(UnsupportedModeError);
        expect((e as UnsupportedModeError).code).toBe('DLOCK_UNSUPPORTED_MODE');
      } else {
        expect(new ReadWriteLock(client, uniqueKey('rw-ok')).read.mode).toBe('read');
      }
      const sem = new Semaphore(client, uniqueKey('sem-kind'), { permits: 2 });
      expect(sem.construction).toBe(modes.includes('permits') ? 'admission' : 'per-permit');
    });
  });

  describe('read-write lock', () => {
    it('readers overlap, a writer never overlaps anyone, tokens strictly increase across both sides', async (t) => {
      await needs(t, 'shared');
      const name = uniqueKey('rw-mix');
      const sections: Section[] = [];
      const clients = await Promise.all(Array.from({ length: 6 }, () => newClient({ ttlMs: 5000 })));
      await Promise.all(
        clients.map(async (c, who) => {
          const rw = new ReadWriteLock(c, name);
          for (let round = 0; round < 6; round++) {
            const side = who < 2 && round % 2 === 0 ? rw.write : rw.read;
            await side.using({ waitMs: 30_000 }, async (lease) => {
              const start = performance.now();
              await sleep(side.mode === 'read' ? 15 : 5);
              sections.push({ who, mode: side.mode, start, end: performance.now(), token: lease.token });
            });
          }
        }),
      );
      expect(sections).toHaveLength(36);
      expect(conflicts(sections)).toEqual([]);
      // Readers really shared the lock: more than one section open at once.
      expect(maxOverlap(sections.filter((s) => s.mode === 'read'))).toBeGreaterThanOrEqual(2);
      const tokens = sections.map((s) => s.token);
      expect(new Set(tokens).size).toBe(tokens.length);
      // Grant order = token order for writes against everything that ended before them.
      for (const w of sections.filter((s) => s.mode === 'write')) {
        for (const s of sections) if (s.end <= w.start) expect(s.token).toBeLessThan(w.token);
      }
      console.info(`[conformance:${factory.name}] rw: ${sections.length} sections, readers at once ${maxOverlap(sections.filter((s) => s.mode === 'read'))}`);
    }, 60_000);

    it('a queued writer stops new readers: it gets the lock although readers keep arriving', async (t) => {
      await needs(t, 'shared', true);
      const name = uniqueKey('rw-starve');
      const readerClients = await Promise.all(Array.from({ length: 3 }, () => newClient({ ttlMs: 5000 })));
      const writerClient = await newClient({ ttlMs: 5000 });
      let stop = false;
      let readsAfterWriterQueued = 0;
      let writerQueued = false;
      let readersHeldWhileWriting = 0;
      let writing = false;
      let inside = 0;
      // Readers overlap continuously: there is always a reader inside, so without the rule the
      // writer would never find the lock free.
      const readers = readerClients.map(async (c, i) => {
        const rw = new ReadWriteLock(c, name);
        await sleep(i * 7);
        while (!stop) {
          await rw.read.using({ waitMs: 30_000 }, async () => {
            inside += 1;
            if (writing) readersHeldWhileWriting += 1;
            if (writerQueued) readsAfterWriterQueued += 1;
            await sleep(25);
            inside -= 1;
          });
        }
      });
      await eventually(() => Promise.resolve(inside > 0), 5000);
      const rw = new ReadWriteLock(writerClient, name);
      writerQueued = true;
      const t0 = performance.now();
      const wrote = await rw.write.using({ waitMs: 20_000 }, async (lease) => {
        writing = true;
        const readersInside = inside;
        await sleep(20);
        writing = false;
        return { token: lease.token, readersInside };
      });
      const waitedMs = performance.now() - t0;
      stop = true;
      await Promise.all(readers);
      expect(wrote.readersInside).toBe(0);
      expect(readersHeldWhileWriting).toBe(0);
      console.info(`[conformance:${factory.name}] rw writer under a stream of readers: waited ${Math.round(waitedMs)} ms, reads after it queued ${readsAfterWriterQueued}`);
    }, 60_000);

    it('a reader arriving after a queued writer waits for that writer', async (t) => {
      await needs(t, 'shared', true);
      const name = uniqueKey('rw-order');
      const [a, b, c] = [await newClient(), await newClient(), await newClient()];
      const first = await new ReadWriteLock(a, name).read.acquire();
      const order: string[] = [];
      const writer = new ReadWriteLock(b, name).write.acquire({ waitMs: 20_000 }).then((l) => (order.push('writer'), l));
      await eventually(async () => (await a.inspectAll(name)).waiters >= 1 || order.length > 0, 5000);
      const reader = new ReadWriteLock(c, name).read.acquire({ waitMs: 20_000 }).then((l) => (order.push('reader'), l));
      await sleep(150);
      expect(order).toEqual([]);
      await first.release();
      const w = await writer;
      await sleep(100);
      expect(order).toEqual(['writer']);
      await w.release();
      const r = await reader;
      expect(order).toEqual(['writer', 'reader']);
      expect(r.token).toBeGreaterThan(w.token);
      expect(w.token).toBeGreaterThan(first.token);
      await r.release();
    }, 30_000);

    it('the write holder takes the read side inside its scope and keeps it after releasing the write (downgrade)', async (t) => {
      await needs(t, 'shared');
      const name = uniqueKey('rw-downgrade');
      const [a, b] = [await newClient({ reentrant: true }), await newClient()];
      const rwA = new ReadWriteLock(a, name);
      const rwB = new ReadWriteLock(b, name);
      let read: Lease | undefined;
      const write = await rwA.write.acquire();
      await write.run(async () => {
        read = await rwA.read.acquire({ waitMs: 2000 });
      });
      expect(read!.token).toBeGreaterThan(write.token);
      expect(await rwB.read.tryAcquire()).toBeNull();
      expect(await write.release()).toBe(true);
      // Downgraded: the read hold stays, another reader joins, a writer cannot.
      expect(read!.isHeld()).toBe(true);
      const other = await rwB.read.tryAcquire();
      expect(other).not.toBeNull();
      expect(await rwB.write.tryAcquire()).toBeNull();
      const state = await a.inspectAll(name);
      expect(state.mode).toBe('shared');
      expect(state.holders.map((h) => h.owner).sort()).toEqual([read!.owner, other!.owner].sort());
      await other!.release();
      await read!.release();
      // The reverse would wait for itself: refused.
      const r2 = await rwA.read.acquire();
      await expect(r2.run(() => rwA.write.acquire({ waitMs: 100 }))).rejects.toBeInstanceOf(InvalidArgumentError);
      await r2.release();
      expect((await a.inspectAll(name)).holders).toEqual([]);
    }, 30_000);

    it('a read lease without renewal is lost at its TTL and its signal says so; a writer then gets in', async (t) => {
      await needs(t, 'shared');
      const name = uniqueKey('rw-lost');
      const [a, b] = [await newClient({ ttlMs: 600, renew: false }), await newClient()];
      const read = await new ReadWriteLock(a, name).read.acquire();
      const w = await new ReadWriteLock(b, name).write.acquire({ waitMs: 10_000 });
      expect(read.signal.aborted).toBe(true);
      expect(w.token).toBeGreaterThan(read.token);
      expect(await read.release()).toBe(false);
      await w.release();
    }, 20_000);
  });

  describe('semaphore (admission)', () => {
    it('never more than the limit held, k permits all or nothing, under overlapping contenders', async (t) => {
      await needs(t, 'permits');
      const name = uniqueKey('sem-k');
      let used = 0;
      let most = 0;
      let grants = 0;
      const clients = await Promise.all(Array.from({ length: 6 }, () => newClient({ ttlMs: 5000 })));
      await Promise.all(
        clients.map(async (c, who) => {
          const sem = new Semaphore(c, name, { permits: 5 });
          for (let round = 0; round < 6; round++) {
            const k = 1 + ((who + round) % 3);
            await sem.using({ permits: k, waitMs: 30_000 }, async () => {
              used += k;
              most = Math.max(most, used);
              expect(used).toBeLessThanOrEqual(5);
              await sleep(8);
              used -= k;
              grants += 1;
            });
          }
        }),
      );
      expect(grants).toBe(36);
      expect(most).toBeLessThanOrEqual(5);
      expect(most).toBeGreaterThanOrEqual(3);
      expect(await new Semaphore(clients[0]!, name, { permits: 5 }).holders()).toEqual([]);
    }, 60_000);

    it('holders() lists owners with their permits; tryAcquire refuses what does not fit; a 1,000,000-permit semaphore works', async (t) => {
      await needs(t, 'permits');
      const name = uniqueKey('sem-holders');
      const [a, b] = [await newClient(), await newClient()];
      const semA = new Semaphore(a, name, { permits: 4 });
      const semB = new Semaphore(b, name, { permits: 4 });
      const three = await semA.acquire({ permits: 3 });
      expect(await semB.tryAcquire({ permits: 2 })).toBeNull();
      const one = await semB.tryAcquire({ permits: 1 });
      expect(one).not.toBeNull();
      const hs = await semA.holders();
      expect(hs.map((h) => [h.owner, h.permits]).sort()).toEqual(
        [
          [three.owner, 3],
          [one!.owner, 1],
        ].sort(),
      );
      expect(await semA.inUse()).toBe(4);
      expect(one!.token).toBeGreaterThan(three.token);
      await Promise.all([three.release(), one!.release()]);
      const big = new Semaphore(a, uniqueKey('sem-million'), { permits: 1_000_000 });
      const most = await big.acquire({ permits: 999_999 });
      const last = await new Semaphore(b, big.name, { permits: 1_000_000 }).tryAcquire();
      expect(last).not.toBeNull();
      expect(await new Semaphore(b, big.name, { permits: 1_000_000 }).tryAcquire()).toBeNull();
      expect(await big.inUse()).toBe(1_000_000);
      await Promise.all([most.release(), last!.release()]);
      await expect(semA.tryAcquire({ permits: 5 })).rejects.toThrow(/permits must be from 1 to the semaphore's 4/);
    }, 30_000);

    it('timed-out and aborted waits leave nothing behind; a holder that stops renewing gives its permits back at its TTL', async (t) => {
      await needs(t, 'permits');
      const name = uniqueKey('sem-exit');
      const [a, b] = [await newClient({ ttlMs: 800, renew: false }), await newClient()];
      const held = await new Semaphore(a, name, { permits: 2 }).acquire({ permits: 2 });
      const sem = new Semaphore(b, name, { permits: 2 });
      expect(await sem.tryAcquire()).toBeNull();
      // The engine just answered b: a short wait that runs out is a timeout, also when the first
      // try itself answers late on a loaded machine (not "no answer from the engine").
      await expect(sem.acquire({ waitMs: 150 })).rejects.toBeInstanceOf(LockTimeoutError);
      const ac = new AbortController();
      const pending = sem.acquire({ waitMs: 10_000, signal: ac.signal });
      await sleep(50);
      ac.abort(new Error('stop'));
      await expect(pending).rejects.toBeInstanceOf(LockAbortedError);
      await eventually(async () => (await b.inspectAll(name)).waiters === 0, 5000);
      expect(b.heldCount).toBe(0);
      // The holder "crashed" (no renewal): both permits come back at its TTL.
      const both = await sem.acquire({ permits: 2, waitMs: 10_000 });
      expect(held.signal.aborted).toBe(true);
      expect(both.token).toBeGreaterThan(held.token);
      await both.release();
    }, 30_000);

    it('fair mode serves waiters in arrival order: a large request at the head is not overtaken', async (t) => {
      await needs(t, 'permits', true);
      const name = uniqueKey('sem-fifo');
      const holder = await newClient();
      const held = await new Semaphore(holder, name, { permits: 3 }).acquire({ permits: 2 });
      const order: string[] = [];
      const waiters: Array<Promise<Lease>> = [];
      const big = await newClient({ fair: true });
      waiters.push(new Semaphore(big, name, { permits: 3 }).acquire({ permits: 3, waitMs: 20_000 }).then((l) => (order.push('big'), l)));
      await eventually(async () => (await holder.inspectAll(name)).waiters >= 1, 5000);
      const small = await newClient({ fair: true });
      waiters.push(new Semaphore(small, name, { permits: 3 }).acquire({ permits: 1, waitMs: 20_000 }).then((l) => (order.push('small'), l)));
      await sleep(150);
      // One permit is free, but the big request queued first: the small one waits behind it.
      expect(order).toEqual([]);
      await held.release();
      const bigLease = await waiters[0]!;
      await sleep(100);
      expect(order).toEqual(['big']);
      await bigLease.release();
      const smallLease = await waiters[1]!;
      expect(order).toEqual(['big', 'small']);
      await smallLease.release();
    }, 30_000);
  });

  describe('fairness', () => {
    it('fair: true grants a busy key to its waiters in the order they queued', async (t) => {
      await needs(t, 'exclusive', true);
      const d = await newDriver();
      const key = uniqueKey('fair-order');
      const holder = await newClient();
      const held = await holder.acquire(key);
      const order: number[] = [];
      const waits: Array<Promise<void>> = [];
      for (let i = 0; i < 5; i++) {
        const c = await newClient({ fair: true });
        waits.push(
          c.acquire(key, { waitMs: 20_000 }).then(async (l) => {
            order.push(i);
            await sleep(5);
            await l.release();
          }),
        );
        // Queued on the engine: seen through keyState where the driver has it, else after a pause.
        if (d.keyState) await eventually(async () => (await holder.inspectAll(key)).waiters >= i + 1 || order.length > 0, 5000);
        else await sleep(300);
      }
      for (const w of waits) w.catch(() => undefined); // awaited below; a failure above must not leave them unhandled
      // A newcomer with fair: true does not barge past them.
      const newcomer = await newClient({ fair: true });
      expect(await newcomer.tryAcquire(key)).toBeNull();
      await held.release();
      await Promise.all(waits);
      expect(order).toEqual([0, 1, 2, 3, 4]);
    }, 30_000);

    it('bounded barging: every contender is served under continuous contention (none starves)', async () => {
      const key = uniqueKey('barging');
      const clients = await Promise.all(Array.from({ length: 4 }, () => newClient({ ttlMs: 5000 })));
      const grants = clients.map(() => 0);
      const waits: number[] = [];
      const until = performance.now() + 1500;
      await Promise.all(
        clients.map(async (c, i) => {
          while (performance.now() < until) {
            const t0 = performance.now();
            const l = await c.acquire(key, { waitMs: 20_000 });
            waits.push(performance.now() - t0);
            grants[i]! += 1;
            await l.release();
          }
        }),
      );
      for (const g of grants) expect(g).toBeGreaterThan(0);
      const sorted = [...waits].sort((x, y) => x - y);
      console.info(`[conformance:${factory.name}] barging: grants ${JSON.stringify(grants)}, max wait ${Math.round(sorted.at(-1) ?? 0)} ms`);
    }, 30_000);
  });
}
