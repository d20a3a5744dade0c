/**
 * Chaos scenario 12 (reliability.md): soak. In one process of its own (soak-child.ts), 1,000
 * waiters on one client take and give back 10,000 holds of the primitive over 10 keys (after a
 * warm-up of 2,000). Pass: heap growth after GC < 5 MB, no process warning
 * (MaxListenersExceededWarning or any other), the holds really waited for each other (more
 * waiters than keys at once), and the process exits within 1 s of `close()` returning (no handle
 * left). The engines: memory and SQLite in the full matrix; the fast slice of `npm test` runs
 * memory only (SQLite takes 10,000 holds with 1,000 waiters at 60-160 holds/s here: 1-3 minutes
 * a primitive).
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { repoRoot } from '../support/workers.js';
import { FULL, msBetween } from './harness.js';
import { defineScenario } from './matrix.js';

const CHILD = fileURLToPath(new URL('./soak-child.ts', import.meta.url));
const WAITERS = 1000;
const CYCLES = 10_000;
const WARMUP = 2000;
const MAX_GROWTH_BYTES = 5 * 1024 * 1024;

interface Result {
  heapGrowthBytes: number;
  ms: number;
  maxConcurrent: number;
  warnings: string[];
}

function soak(url: string, primitive: string, key: string): Promise<{ result: Result; exitMs: number; code: number | null; stderr: string }> {
  const child = spawn(
    process.execPath,
    ['--expose-gc', '--unhandled-rejections=strict', '--import', 'tsx', CHILD, JSON.stringify({ url, primitive, key, waiters: WAITERS, cycles: CYCLES, warmup: WARMUP })],
    { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let stderr = '';
  let closedAt: bigint | undefined;
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    if (closedAt === undefined && out.includes('"type":"closed"')) closedAt = process.hrtime.bigint();
  });
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => {
      const exitAt = process.hrtime.bigint();
      const lines = out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string } & Result);
      const result = lines.find((l) => l.type === 'result');
      if (!result || closedAt === undefined) return reject(new Error(`soak child ended (code ${code}) without a result:\n${out}\n${stderr}`));
      resolve({ result, exitMs: msBetween(closedAt, exitAt), code, stderr });
    });
  });
}

defineScenario(
  {
    number: 12,
    title: `soak: ${CYCLES} holds, ${WAITERS} waiters in one process`,
    engines: FULL ? ['memory', 'sqlite'] : ['memory'],
    primitives: ['mutex', 'read', 'write', 'semaphore', 'multi', 'election'],
    timeoutMs: 600_000,
  },
  async ({ engine, primitive, key }) => {
    const { result, exitMs, code, stderr } = await soak(engine.localUrl, primitive, key);
    expect(code, stderr).toBe(0);
    expect(result.warnings).toEqual([]);
    expect(result.heapGrowthBytes).toBeLessThan(MAX_GROWTH_BYTES);
    // Held one at a time per key (10 keys) but waited for by 1,000 (read holds share).
    expect(result.maxConcurrent).toBeGreaterThanOrEqual(primitive === 'read' ? 1 : 2);
    expect(exitMs).toBeLessThan(1000);
    return {
      runs: 1,
      violations: 0,
      figures: { heapGrowthKB: Math.round(result.heapGrowthBytes / 1024), cyclesPerS: Math.round(CYCLES / (result.ms / 1000)), exitMs: Math.round(exitMs) },
    };
  },
);
