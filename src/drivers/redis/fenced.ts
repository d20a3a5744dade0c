import { StaleTokenError } from '../../errors.js';
import { fenceTokenArg } from '../fenced-token.js';
import { IoRedisAdapter, NodeRedisAdapter, isNodeRedis, type IoRedisLike, type NodeRedisLike, type RedisAdapter } from './adapter.js';
import * as scripts from './scripts.generated.js';

/**
 * Fencing in practice for a resource kept in Redis: a hash whose fence (the field `__fence`) holds
 * the highest fencing token that has read or written it. Both steps of a read-modify-write are
 * fenced, each in one script:
 * - {@link read}`(token)` raises the fence to `token` and returns the fields, or throws
 *   {@link StaleTokenError} if a newer token has already read or written (read-and-advance);
 * - {@link write}`(token, fields)` is accepted only while `token` is at least the fence.
 *
 * Why the read must be fenced too: a holder paused while it holds the lock (GC, SIGSTOP) can come
 * back after its lease is gone and write what it computed before the pause. If the next holder has
 * only *read* by then, a fence that only writes raise is still at the old token, the stale write is
 * accepted, and the next holder then writes the same value again: one update is lost although every
 * write was fenced. With read-and-advance the next holder's read has raised the fence, so the stale
 * write is refused.
 *
 * @example
 * ```ts
 * const stock = new FencedRedisHash(redis, 'shop:item:42');
 * await locks.using('item:42', async (lease) => {
 *   const { count } = await stock.read(lease.token);              // raises the fence to lease.token
 *   await stock.write(lease.token, { count: Number(count) - 1 }); // StaleTokenError if a newer holder read or wrote
 * });
 * ```
 * For other stores the rule is the same: a reader with token t first advances the fence to t
 * (`UPDATE t SET fence = greatest(fence, $t) WHERE id = $id RETURNING ...`), and a write with a token
 * below the fence is rejected (`UPDATE ... WHERE id = $id AND fence <= $t`, "0 rows" = stale).
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

  /** Write `fields` with `token`; throws {@link StaleTokenError} if a higher token has read or written. */
  async write(token: bigint, fields: Readonly<Record<string, string | number | bigint>>): Promise<void> {
    const args: string[] = ['write', fenceTokenArg('FencedRedisHash', 'write', token, 'peek()')];
    for (const [f, v] of Object.entries(fields)) {
      if (f === '__fence') continue;
      args.push(f, String(v));
    }
    const [ok, highest] = (await this.redis.run(scripts.fenced, [this.key], args)) as [number, string];
    if (Number(ok) !== 1) throw new StaleTokenError(this.key, token, BigInt(highest));
  }

  /**
   * The fields of the hash (without `__fence`), read with `token` (the lease's `lease.token`): the
   * fence is raised to `token` in the same script, so no write with a lower token is accepted after
   * this read. Throws {@link StaleTokenError} (`operation: 'read'`) if a higher token has already
   * read or written: the lock was lost, re-acquire before reading again.
   */
  async read(token: bigint): Promise<Record<string, string>> {
    const r = (await this.redis.run(scripts.fenced, [this.key], ['read', fenceTokenArg('FencedRedisHash', 'read', token, 'peek()')])) as unknown[];
    if (Number(r[0]) !== 1) throw new StaleTokenError(this.key, token, BigInt(String(r[1])), 'read');
    return fields(r.slice(1));
  }

  /**
   * The fields of the hash (without `__fence`), read WITHOUT a token: the fence does not move. For
   * observers that never write (dashboards, audits, tests). Never compute a write from it: a stale
   * holder could then slip its write in between (see the class comment); use {@link read}.
   */
  async peek(): Promise<Record<string, string>> {
    return fields((await this.redis.run(scripts.readHash, [this.key], [])) as unknown[]);
  }

  /** The highest token that has read or written so far (0 when none). */
  async highest(): Promise<bigint> {
    const r = (await this.redis.run(scripts.readHash, [this.key], [])) as string[];
    const i = r.indexOf('__fence');
    return i >= 0 && i % 2 === 0 ? BigInt(String(r[i + 1])) : 0n;
  }
}

function fields(flat: readonly unknown[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) if (flat[i] !== '__fence') out[String(flat[i])] = String(flat[i + 1]);
  return out;
}

