import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // 2-core machines: real servers and forked workers compete for CPU.
    maxWorkers: 2,
    // CI also writes a JSON report (DLOCK_TEST_JSON) to print one plain "N passed, N failed" line.
    reporters: process.env.DLOCK_TEST_JSON ? ['default', 'json'] : ['default'],
    outputFile: process.env.DLOCK_TEST_JSON ? { json: process.env.DLOCK_TEST_JSON } : undefined,
  },
});
