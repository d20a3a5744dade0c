import { StaleTokenError } from '../../errors.js';
import { IoRedisAdapter, NodeRedisAdapter, isNodeRedis, type IoRedisLike, type NodeRedisLike, type RedisAdapter } from './adapter.js';
import * as scripts from './scripts.generated.js';

/**
 * Fencing in practice for a resource kept in Redis: a hash whose writes are accepted only with a
 * fencing token at least as high as the highest it has already accepted (kept in the field
 * `__fence`), in one script. A holder that was paused past its TTL, and whose lock went to
 * someone else meanwhile, gets {@link StaleTokenError} instead of overwriting newer data.
 *
 * @example
 * ```ts
 * const stock = new FencedRedisHash(redis, 'shop:item:42');
 * await locks.using('item:42', async (lease) => {
 *   const { count } = await stock.read();
 *   await stock.write(lease.token, { count: Number(count) - 1 }); // throws if a newer holder wrote
 * });
 * ```
 * For other stores the same rule is one conditional write: `UPDATE t SET ..., fence = $token
 * WHERE id = $id AND fence <= $token` and treat "0 rows" as stale.
 */
export class FencedRedisHash {
  private readonly redis: RedisAdapter;
  constructor(
    client: IoRedisLike | NodeRedisLike,
    /** The Redis key of the protected hash. */
    readonly key: string,
  ) {
    this.redis = isNodeRedis(client) ? new NodeRedisAdapter(client, false) : new IoRedisAdapter(client, false);
  }

  /** Write `fields` with `token`; throws {@link StaleTokenError} if a higher token has written. */
  async write(token: bigint, fields: Readonly<Record<string, string | number | bigint>>): Promise<void> {
    const args: string[] = [token.toString()];
    for (const [f, v] of Object.entries(fields)) {
      if (f === '__fence') continue;
      args.push(f, String(v));
    }
    const [ok, highest] = (await this.redis.run(scripts.fencedWrite, [this.key], args)) as [number, string];
    if (Number(ok) !== 1) throw new StaleTokenError(this.key, token, BigInt(highest));
  }

  /** The fields of the hash (without `__fence`). */
  async read(): Promise<Record<string, string>> {
    const r = (await this.redis.run(scripts.readHash, [this.key], [])) as string[];
    const out: Record<string, string> = {};
    for (let i = 0; i + 1 < r.length; i += 2) if (r[i] !== '__fence') out[String(r[i])] = String(r[i + 1]);
    return out;
  }

  /** The highest token accepted so far (0 when none). */
  async highest(): Promise<bigint> {
    const r = (await this.redis.run(scripts.readHash, [this.key], [])) as string[];
    const i = r.indexOf('__fence');
    return i >= 0 && i % 2 === 0 ? BigInt(String(r[i + 1])) : 0n;
  }
}
