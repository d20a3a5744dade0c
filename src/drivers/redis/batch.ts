/**
 * Coalesces the lock operations a client issues in one tick into ONE `ops.lua` call per group,
 * with all the ops packed into a single argument and all the answers in a single string reply.
 *
 * Why by hand: the uncontended path is bound by client CPU per command and per argument (ioredis
 * spends about a microsecond on each argument it writes and each reply element it parses).
 * Sixty-four loops acquiring at once thus cost one command with two arguments instead of
 * sixty-four commands with five or six each.
 *
 * The flush runs on `process.nextTick`, i.e. once the current microtask queue has drained, so
 * every continuation woken by the previous reply has had its chance to join: no timer and no
 * added latency. Each group is one Redis Cluster slot (the driver groups by lock on a cluster);
 * on a single node everything is one group.
 *
 * With replica acknowledgements on (the driver's `replicaAcks`), a batch that may grant or renew
 * is followed by `WAIT` on the same connection; its grants and renewals reject with
 * {@link ReplicaAckError} when too few replicas acknowledged.
 */
import type { LuaScript } from './script.js';

/**
 * One operation of ops.lua: acquire, acquire-or-queue (exclusive), the same for any admission
 * (`g`, `w`), extend, release, cancel, pass on (`k`), force-release (`f`).
 */
export type OpCode = 'a' | 'q' | 'g' | 'w' | 'e' | 'r' | 'c' | 'k' | 'f';

/** The ops that may grant: their "1<token>" answers are grants. */
function grants(op: OpCode): boolean {
  return op === 'a' || op === 'q' || op === 'g' || op === 'w';
}

/** What one ops.lua call answered. */
export interface OpsReply {
  readonly reply: unknown;
  /**
   * Set when replica acknowledgements were asked for and did not come (see the driver's
   * `replicaAcks`): why. The batch's grants and renewals then reject with {@link ReplicaAckError}.
   */
  readonly unacked?: string;
}

/**
 * A grant or renewal that the master made but that not enough replicas acknowledged (WAIT).
 * `answer` is the op's own answer ("1<token>" for a grant), so the driver can give the grant back.
 */
export class ReplicaAckError extends Error {
  constructor(
    message: string,
    /** The op's own answer ("1<token>" for a grant). */
    readonly answer: string,
  ) {
    super(message);
    this.name = 'ReplicaAckError';
  }
}

interface Pending {
  /** The group key (see {@link OpBatcher.submit}). */
  readonly group: string;
  /** Routes the batch (KEYS[1]). */
  readonly firstLock: string;
  readonly parts: string[];
  readonly settle: Array<{ op: OpCode; lock: string; owner: string; resolve: (v: string) => void; reject: (e: unknown) => void }>;
  /** Holds a grant or a renewal, whose write replicas may have to acknowledge. */
  writes: boolean;
}

/** At most this many ops per script call: bounds how long one call holds the server. */
const MAX_OPS = 32;

/** `<byte length>:<text>`: the field encoding ops.lua reads. */
function field(text: string): string {
  return `${Buffer.byteLength(text)}:${text}`;
}

export class OpBatcher {
  private groups = new Map<string, Pending>();
  private scheduled = false;

  constructor(
    private readonly script: LuaScript,
    /** Runs one batch; `onLate` receives the reply of a batch the connection failed under but that ran after all. */
    private readonly run: (
      script: LuaScript,
      keys: readonly string[],
      args: readonly (string | number)[],
      onLate: (reply: unknown) => void,
    ) => Promise<unknown>,
    /**
     * Optional: runs each batch instead of `run` (KEYS and the packed ops; `writes`: the batch may
     * grant or renew), and may report that its writes went unacknowledged by replicas.
     */
    private readonly runAcked?: (keys: readonly string[], packed: string, writes: boolean) => Promise<OpsReply>,
  ) {}

  /** Queue one op; resolves the op's own answer line ("1...", "0..."). */
  submit(group: string, op: OpCode, lock: string, owner: string, arg: string): Promise<string> {
    return new Promise((resolve, reject) => {
      let p = this.groups.get(group);
      if (!p || p.settle.length >= MAX_OPS) {
        if (p) this.send(p);
        p = { group, firstLock: lock, parts: [], settle: [], writes: false };
        this.groups.set(group, p);
      }
      p.parts.push(op + field(lock) + field(owner) + field(arg));
      p.settle.push({ op, lock, owner, resolve, reject });
      if (grants(op) || op === 'e') p.writes = true;
      if (!this.scheduled) {
        this.scheduled = true;
        process.nextTick(this.flush);
      }
    });
  }

  /** Send what is queued now (also before any other command, so that order on the wire is kept). */
  readonly flush = (): void => {
    this.scheduled = false;
    if (this.groups.size === 0) return;
    const groups = this.groups;
    this.groups = new Map();
    for (const p of groups.values()) this.send(p);
  };

  private send(p: Pending): void {
    const keys = [p.firstLock];
    const packed = p.parts.join('');
    const fail = (error: unknown): void => {
      for (const s of p.settle) s.reject(error);
    };
    if (this.runAcked) this.runAcked(keys, packed, p.writes).then(({ reply, unacked }) => this.answer(p, reply, unacked), fail);
    else this.run(this.script, keys, [packed], (reply) => this.late(p, reply)).then((reply) => this.answer(p, reply, undefined), fail);
  }

  /** A batch reported failed ran after all (resent after a reconnect): give back its grants. */
  private late(p: Pending, reply: unknown): void {
    const lines = String(reply).split('\n');
    p.settle.forEach((s, i) => {
      if (grants(s.op) && lines[i]?.charCodeAt(0) === 49) this.submit(p.group, 'r', s.lock, s.owner, '').catch(() => undefined);
    });
  }

  private answer(p: Pending, reply: unknown, unacked: string | undefined): void {
    const text = String(reply);
    // A batch of one (the usual case): its line, no split.
    const one = p.settle.length === 1 && unacked === undefined ? p.settle[0] : undefined;
    if (one && text.length > 0 && text.indexOf('\n') === text.length - 1) {
      one.resolve(text.slice(0, -1));
      return;
    }
    const lines = text.split('\n');
    if (lines.length !== p.settle.length + 1) {
      const e = new Error(`dlock: ops.lua answered ${lines.length - 1} lines for ${p.settle.length} ops`);
      for (const s of p.settle) s.reject(e);
      return;
    }
    for (let i = 0; i < p.settle.length; i++) {
      const s = p.settle[i];
      if (!s) continue;
      const line = lines[i] ?? '';
      // Only a grant or a done renewal ("1...") needed the replicas; everything else stands.
      if (unacked !== undefined && s.op !== 'r' && s.op !== 'c' && s.op !== 'k' && s.op !== 'f' && line.charCodeAt(0) === 49) s.reject(new ReplicaAckError(unacked, line));
      else s.resolve(line);
    }
  }
}
