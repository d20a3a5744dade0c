import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

/** Who holds a lock, decoded from an owner id. */
export interface OwnerInfo {
  /** Host name of the owner process. */
  readonly host: string;
  /** Process id of the owner. */
  readonly pid: number;
  /** Random per client instance. */
  readonly clientId: string;
  /** Sequence of the acquisition within that client. */
  readonly seq: number;
}

/**
 * Owner ids look like `host:pid:clientId:seq` so an operator reading `dlock inspect` can find
 * the process. The random clientId keeps ids unique across restarts that reuse a pid.
 */
export class OwnerIds {
  readonly prefix: string;
  private seq = 0;
  constructor() {
    const host = hostname().replace(/[:\s]/g, '_') || 'unknown-host';
    this.prefix = `${host}:${process.pid}:${randomBytes(6).toString('hex')}`;
  }
  next(): string {
    this.seq += 1;
    return `${this.prefix}:${this.seq}`;
  }
}

/** Decode an owner id written by dlock; `null` for ids written by something else. */
export function parseOwner(owner: string): OwnerInfo | null {
  const m = /^(.*):(\d+):([0-9a-f]+):(\d+)$/.exec(owner);
  if (!m) return null;
  return { host: m[1] ?? '', pid: Number(m[2]), clientId: m[3] ?? '', seq: Number(m[4]) };
}
