import { InvalidArgumentError } from '../errors.js';

/**
 * The fencing token of a fenced helper's read or write (FencedRedisHash, FencedMysqlTable,
 * fencedRead/fencedUpdate) as a decimal string. A missing or negative token is a caller's mistake
 * (often an old call of `read()` without `lease.token`): say what to pass instead.
 */
export function fenceTokenArg(helper: string, op: 'read' | 'write', token: bigint, unfenced: string): string {
  if (typeof token !== 'bigint' || token < 0n) {
    throw new InvalidArgumentError(
      `${helper} needs the lease's fencing token (lease.token, a bigint >= 0) to ${op}, got ${String(token)}.` +
        (op === 'read' ? ` For a read that takes no part in a write (monitoring), use ${unfenced}.` : ''),
    );
  }
  return token.toString();
}
