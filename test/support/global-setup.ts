import type { TestProject } from 'vitest/node';
import { startRedis } from './redis.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** URL of the redis-server shared by the whole run (tests that stop or kill an engine start their own). */
    redisUrl: string;
  }
}

/** One shared redis-server for the run; stopped in teardown (and by the exit hook as a last resort). */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const redis = await startRedis();
  project.provide('redisUrl', redis.url);
  return async () => {
    await redis.stop();
  };
}
