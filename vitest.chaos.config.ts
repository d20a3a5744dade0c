import { defineConfig } from 'vitest/config';

/**
 * `npm run chaos`: the chaos suite's full matrix (test/chaos, every scenario × engine ×
 * primitive), two files at a time, as the default config does. The default config runs the same files as
 * a fast slice (one engine and primitive per scenario, rotating by day).
 */
export default defineConfig({
  test: {
    include: ['test/chaos/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    pool: 'forks',
    // 2-core machines: real servers and forked workers compete for CPU.
    maxWorkers: 2,
    env: { DLOCK_CHAOS: 'full', DLOCK_CHAOS_RESULTS: process.env.DLOCK_CHAOS_RESULTS ?? 'chaos-results.jsonl' },
  },
});
