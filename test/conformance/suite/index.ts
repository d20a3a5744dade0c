/**
 * ONE conformance suite that every driver runs, through a small factory per driver
 * (memory.test.ts, redis.test.ts, sqlite.test.ts, ...). Everything here goes through the public
 * LockClient over a real engine; cross-process tests fork real Node processes.
 *
 * One file per concern, each a `defineXxx(ctx)` called here in a fixed order (the test names and
 * their order are the run log's: keep them).
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect } from 'vitest';
import { LockClient, type LockClientOptions } from '../../../src/core/client.js';
import type { LockDriver } from '../../../src/drivers/driver.js';
import { killWorkers } from '../../support/workers.js';
import { defineAdmin } from './admin.js';
import { defineAdmission } from './admission.js';
import { defineClose } from './close.js';
import type { ConformanceFactory, SuiteContext } from './context.js';
import { defineExclusion } from './exclusion.js';
import { eventually, within } from './helpers.js';
import { defineInput } from './input.js';
import { defineLiveness } from './liveness.js';
import { defineReentrancyInspect } from './reentrancy-inspect.js';
import { defineReleaseAndTokens } from './release-and-tokens.js';
import { defineWaiting } from './waiting.js';

export type { ConformanceFactory, IsolatedEngine, SuiteContext } from './context.js';

export function defineConformanceSuite(factory: ConformanceFactory): void {
  describe(`conformance: ${factory.name}`, () => {
    const clients: LockClient[] = [];
    const rawDrivers: LockDriver[] = [];

    const newClient = async (opts?: LockClientOptions): Promise<LockClient> => {
      const c = new LockClient(await factory.create(), opts);
      clients.push(c);
      return c;
    };
    const newDriver = async (): Promise<LockDriver> => {
      const d = await factory.create();
      rawDrivers.push(d);
      return d;
    };
    /** Wait machinery may linger briefly (e.g. a cached subscription), but must go away. */
    const expectNoWaitResidue = async (key: string): Promise<void> => {
      if (!factory.waitResidue) return;
      const residue = factory.waitResidue.bind(factory);
      let last: Record<string, number> = {};
      await eventually(async () => {
        last = await residue(key);
        return Object.values(last).every((n) => n === 0);
      }, 5000);
      expect(Object.entries(last).filter(([, n]) => n !== 0)).toEqual([]);
    };
    const uniqueKey = (name: string): string => `conf:${factory.name}:${name}:${randomBytes(4).toString('hex')}`;

    afterEach(async () => {
      await killWorkers();
      const all = clients.splice(0).map((c) => within(c.close(), 10_000, 'client.close()'));
      const drivers = rawDrivers.splice(0).map((d) => within(d.close(), 10_000, 'driver.close()'));
      await Promise.all([...all, ...drivers]);
    });

    const ctx: SuiteContext = { factory, newClient, newDriver, expectNoWaitResidue, uniqueKey };
    defineExclusion(ctx);
    defineReleaseAndTokens(ctx);
    defineLiveness(ctx);
    defineWaiting(ctx);
    defineReentrancyInspect(ctx);
    defineClose(ctx);
    defineInput(ctx);
    defineAdmission(ctx);
    defineAdmin(ctx);
  });
}
