/** The counter in a Redis hash through FencedRedisHash: read(token) / peek() / write(token). */
import { Redis } from 'ioredis';
import { FencedRedisHash } from '../../../src/drivers/redis/index.js';
import type { OpenCounter } from './index.js';

export const open: OpenCounter = async (url, id) => {
  const raw = new Redis(url);
  raw.on('error', () => undefined);
  const store = new FencedRedisHash(raw, `fence-res:${id}`);
  await raw.ping();
  return {
    readFenced: async (token) => Number((await store.read(token)).count ?? '0'),
    readPlain: async () => Number((await store.peek()).count ?? '0'),
    writeFenced: (token, value) => store.write(token, { count: value }),
    close: () => {
      raw.disconnect();
      return Promise.resolve();
    },
  };
};
