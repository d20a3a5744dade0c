/** The counter in a Redis hash: FencedRedisHash for the fenced write, HSET for the plain one. */
import { Redis } from 'ioredis';
import { FencedRedisHash } from '../../../src/drivers/redis/index.js';
import type { OpenCounter } from './index.js';

export const open: OpenCounter = async (url, id) => {
  const resource = `fence-res:${id}`;
  const raw = new Redis(url);
  raw.on('error', () => undefined);
  const store = new FencedRedisHash(raw, resource);
  await raw.ping();
  return {
    read: async () => Number((await store.read()).count ?? '0'),
    writeFenced: (token, value) => store.write(token, { count: value }),
    writePlain: async (value) => {
      await raw.hset(resource, 'count', String(value));
    },
    close: () => {
      raw.disconnect();
      return Promise.resolve();
    },
  };
};
