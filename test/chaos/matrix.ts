/**
 * One scenario × engine × primitive matrix as vitest cases, the way the conformance suite runs
 * one suite per driver: `defineScenario` makes a describe per engine (started on first use,
 * stopped after the file) and a case per primitive. A case the engine cannot run is skipped with
 * the reason (an engine without that admission mode per `info.modes`, a process-local engine in
 * a cross-process scenario...) and recorded as skipped in the results.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, describe, it, type TestContext } from 'vitest';
import type { LockClient, LockClientOptions } from '../../src/core/client.js';
import { killWorkers } from '../support/workers.js';
import { chaosEngine, ENGINE_NAMES, localClient, stopEngines, type RunningEngine } from './engines.js';
import { report, slice, type CellResult } from './harness.js';
import { unsupported, type PrimitiveName } from './primitives.js';

/** What a case body gets. */
export interface Cell {
  readonly engine: RunningEngine;
  readonly engineName: string;
  readonly primitive: PrimitiveName;
  /** A key of its own: `chaos:<scenario>:<engine>:<primitive>:<random>`. */
  readonly key: string;
  /** A client in this process (closed after the case). */
  readonly client: (options?: LockClientOptions) => Promise<LockClient>;
  /** Skip the case with a reason (recorded in the results). */
  readonly skip: (reason: string) => never;
}

export interface ScenarioOptions {
  /** reliability.md plan number. */
  number: number;
  title: string;
  engines?: readonly string[];
  primitives?: readonly PrimitiveName[];
  /** Skip process-local engines (memory): the scenario needs a second process. */
  crossProcess?: boolean;
  /** Where the fast slice may land (default: every engine, or every one with a URL for a cross-process scenario). */
  fastEngines?: readonly string[];
  /** Which primitives the fast slice may pick (default: all of `primitives`). */
  fastPrimitives?: readonly PrimitiveName[];
  timeoutMs?: number;
  /** Start Redis and Redlock with `appendfsync always` (see engines.ts): the scenario crashes them. */
  durable?: boolean;
}

/** A case returns its result (runs, violations, figures); it fails by expect() as usual. */
export type CellBody = (cell: Cell) => Promise<Omit<CellResult, 'scenario' | 'engine' | 'primitive'>>;

export function defineScenario(o: ScenarioOptions, body: CellBody): void {
  const fastEngines = o.fastEngines ?? (o.crossProcess ? (o.engines ?? ENGINE_NAMES).filter((e) => e !== 'memory') : undefined);
  const chosen = slice(o.number, o.engines, o.primitives, { engines: fastEngines, primitives: o.fastPrimitives });
  const scenario = `${o.number}. ${o.title}`;
  const clients: LockClient[] = [];
  afterEach(async () => {
    await killWorkers();
    await Promise.allSettled(clients.splice(0).map((c) => c.close()));
  });
  afterAll(() => stopEngines(), 120_000);
  describe(`chaos ${scenario} [${chosen.label}]`, () => {
    for (const engineName of chosen.engines) {
      describe(engineName, () => {
        for (const primitive of chosen.primitives) {
          it(primitive, { timeout: o.timeoutMs ?? 90_000 }, async (ctx: TestContext) => {
            const base = { scenario, engine: engineName, primitive };
            let skipped = false;
            const skip = (reason: string): never => {
              skipped = true;
              report({ ...base, runs: 0, violations: 0, figures: {}, skipped: reason });
              return ctx.skip(reason);
            };
            const engine = await chaosEngine(engineName, { durable: o.durable }).start();
            if (o.crossProcess && engine.workerUrl === undefined) skip('process-local engine: no second process can share its locks');
            const make = async (options?: LockClientOptions): Promise<LockClient> => {
              const c = await localClient(engine, options);
              clients.push(c);
              return c;
            };
            const why = unsupported(await make(), primitive);
            if (why) skip(why);
            const key = `chaos:${o.number}:${engineName}:${primitive}:${randomBytes(4).toString('hex')}`;
            let result: Awaited<ReturnType<CellBody>>;
            try {
              result = await body({ engine, engineName, primitive, key, client: make, skip });
            } catch (e) {
              // A failed check or a harness failure: recorded as such (the table says which).
              if (!skipped) {
                report({ ...base, runs: 1, violations: 0, figures: {}, failed: String((e as Error)?.message ?? e).split('\n')[0]!.slice(0, 200) });
              }
              throw e;
            }
            report({ ...base, ...result });
            console.info(`[chaos ${o.number}] ${engineName} ${primitive}: ${JSON.stringify(result)}`);
          });
        }
      });
    }
  });
}
