/**
 * Redlock driver: one lock over N independent Redis nodes (no replication between them), granted
 * when a majority of them grant it.
 *
 * Guarantees:
 * - Modes `exclusive` and `shared` (`info.modes`: a mutex and both sides of a ReadWriteLock).
 *   Each node applies the admission rule (src/core/admission.ts) to its own holders in one Lua
 *   step: an exclusive request is granted on a node where nothing is held, a shared one where no
 *   exclusive holder is (or only the write holder it sits beside, `alongside`: the write holder
 *   taking the read side, and keeping it after releasing the write side). Every mode then needs
 *   a majority within the validity, exactly as below. Why that excludes: any two majorities share
 *   a node, and that node ran the two requests one after the other, so it refused the second
 *   unless both are shared. So two exclusive holders never both hold a majority, nor an exclusive
 *   and a shared one (the write holder's own read hold aside); shared holders hold together.
 *   A lost round, a late grant and a release remove only the requester's own entry on each node
 *   (shared holders are entries of `<lock>:h`, keyed by owner), never another owner's.
 * - A waiting writer is not starved by overlapping readers: its try on a node that readers hold
 *   marks it (`<lock>:x`, see redlock-ops.lua), and a marked node admits no new reader (readers
 *   holding stay and renew), so the readers drain from a majority and the writer gets in. While
 *   readers keep it out, its tries go to every node for this (a waiter otherwise asks the first
 *   node alone). The mark only refuses more, so it cannot break exclusion; a writer that dies or
 *   gives up leaves it behind for at most the readers' remaining TTL + 2 s (its give-up removes
 *   it). Writers are thus preferred: readers can wait behind a stream of writers.
 * - Quorum floor(N/2)+1. Every request goes to all nodes at once; a round settles as soon as a
 *   majority for, or enough against that a majority is out of reach, is known (a dead or slow
 *   minority costs nothing). Each node runs one Lua script per batch (redis/lua/redlock-ops.lua),
 *   using only its own clock for expiry.
 * - Validity = TTL - elapsed - drift (1% + 2 ms), measured on the monotonic clock from the moment
 *   the request was sent: a grant whose validity is already gone is never reported; it is
 *   released on every node, like the partial grants of a lost round (sent at once to every node
 *   that did not refuse, including those that have not answered yet).
 * - Extension (the core's renewal) and release need a majority too. Release and extend are
 *   compare-and-act on the owner id on each node: another owner's lock is never touched.
 * - Renewal repairs nodes that lost the lock (restarted empty, key evicted or expired early): once
 *   a renewal has reached a majority, each node that answered "free" is sent a restore (the `c`
 *   op with a TTL: set `<owner>|<token>` if the key is absent, one Lua step, never over another
 *   owner), so the lock survives a rolling restart of the nodes, one at a time, as long as each
 *   node is back and renewed before the next goes down. Why this is safe:
 *   - it is sent only after a majority answered that it still holds the lock with this renewal,
 *     i.e. while the lease is quorum-valid: no other owner can hold a majority meanwhile (any two
 *     majorities share a node, and that node holds our key), so restoring takes nothing from a
 *     legitimate holder, and a node another owner grabbed meanwhile (a contender's partial grant)
 *     keeps it;
 *   - its TTL is what is left of that renewal's validity (TTL - drift - elapsed since it was
 *     sent), so the restored key never outlives the majority's keys, and a renewal that came too
 *     late restores nothing. A release of the same owner cancels the restores of a renewal still
 *     in flight (a late one would leave the key behind on that node until its TTL);
 *   - tokens do not go back: the restore carries the token the majority holds (T) and raises the
 *     node's counter to at least T, like the write-back of a grant, so after every node has been
 *     wiped and restored in turn, the next grant still gets a token > T.
 *   A renewal that fails to reach a majority restores nothing: the lease is lost, as before.
 *   A shared hold is restored as a shared entry, only on a node where no exclusive holder is (an
 *   exclusive one only where nothing is held): the same argument, since the renewed majority
 *   excludes any exclusive holder's majority.
 * - Errors say what each node answered ({@link QuorumError} `answers`: granted, held by another
 *   owner, unreachable, script error). A lock held by someone else is contention, not an error:
 *   `tryAcquire` answers busy when a majority of nodes answered without error.
 * - Waiting is event-driven: a waiter subscribes to `<lock>:released` on every node, then tries;
 *   a node whose lock a waiter found busy publishes there on release. The wait is bounded by the
 *   holder's remaining TTL as a majority of nodes reports it (a lost message costs at most that).
 *   After a round lost to a split vote (several contenders, none with a majority), a waiter
 *   retries after a random delay of up to `retryJitterMs`, so the contenders do not collide again.
 * - Fencing tokens: each node keeps a per-key counter (never expires). A grant INCRs it on each
 *   granting node; the token T is the maximum over the granting majority. When those nodes did
 *   not all answer T, T is written back (counter = max(counter, T)) to every node, and the grant is
 *   reported only once a majority holds the lock with T. Any later majority shares a node with
 *   this one, whose counter is >= T, so every later token is > T: tokens strictly increase per key
 *   across both modes as long as nodes keep their writes. Shared holders granted at the same time
 *   over different majorities could reach the same maximum on different nodes, so a shared grant
 *   takes the counter's next value that is r mod N (INCRBY, r = the node's rank among the sorted
 *   node labels): a node never issues a value twice and two nodes never issue the same value, so
 *   the maximum, issued to this holder by one node, is no other holder's token. This needs every
 *   client to name the nodes alike (`host:port`); otherwise two readers at once may share a token
 *   (the order of tokens across grants that follow each other holds either way).
 * Does not (limits, stated plainly):
 * - tolerate unbounded clock drift: each node expires keys by its own clock; a node whose clock
 *   runs fast by more than the drift allowance can free a lock early.
 * - survive nodes that forget faster than renewal repairs them: a node restarted without its data
 *   (no AOF, or AOF without `appendfsync always`) while a lock it granted is still valid, before
 *   a renewal restored it there (no renewal, or a second node forgetting within one renewal
 *   interval), can grant it again, so two holders can each see a majority, and its counter can go
 *   back, so tokens can repeat. Run every node with `appendonly yes` + `appendfsync always`, or
 *   keep a crashed node down longer than the longest TTL (delayed restart; this keeps locks safe
 *   but not tokens: a node that lost its counter needs fsync for fencing), and restart nodes one
 *   at a time with more than a renewal interval (TTL x renewRatio) plus a reconnect between two.
 * - keep exclusion across a holder's pause past its TTL (no lease lock can): use the fencing token.
 * - offer `allocateRange` (segment ids): a counter needs consensus, not a majority of independent nodes.
 * - grant `permits` holds (not in `info.modes`): a `Semaphore` uses its per-permit construction
 *   on Redlock (one Redlock lock per permit, each exclusive, so each safe by the argument above).
 *   Why: the intersection of two majorities catches a conflict between TWO holders, which is all
 *   exclusive and shared need; a limit of L is broken by L + 1 holders, and no node has to see
 *   all of them. Each node admits up to L permits and an owner needs only a majority of nodes, so
 *   different owners count on different majorities: 3 nodes, L = 2: A granted on nodes 1 and 2,
 *   B on 2 and 3, C on 1 and 3; no node counts more than 2, and 3 owners hold. (Capping each
 *   node at floor(L * q / N) permits would be safe, since every hold counts on q nodes, but it
 *   admits fewer than L at once: 1 of 2 in that example. Not a semaphore of L.)
 * - keep a queue of waiters across nodes (`info.fairness` `none`): whoever tries first after a
 *   release wins; `fair: true` is accepted and not honoured; a reader that arrives after a waiting
 *   writer may still get in before the writer's try has marked a majority.
 * - order waiters (not fair). Requires Redis >= 6.0 (SET KEEPTTL).
 */
import { LatchWatch } from '../../core/change-watch.js';
import { driftFor, monotonicNow, sleep } from '../../core/clock.js';
import type { Logger } from '../../core/renewal.js';
import { ClosedError, InvalidArgumentError, OutOfRangeError, QuorumError, UnavailableError, UnsupportedModeError, type NodeAnswer } from '../../errors.js';
import type {
  AcquireRequest,
  ChangeWatch,
  DriverInfo,
  ExtendItem,
  ForceReleased,
  HandedOver,
  KeyPage,
  KeyState,
  TrySetDriver,
  LockState,
  TryResult,
} from '../driver.js';
import { isIoRedis, isNodeRedis, type ScanNode } from '../redis/adapter.js';
import type { OpCode } from '../redis/batch.js';
import { lockKeyName, lockPattern, scanPage } from '../redis/scan.js';
import * as scripts from '../redis/scripts.generated.js';
import type { MarkStore } from '../id-store.js';
import { RedlockNode, type RedlockNodeSpec } from './node.js';
import { ioredis } from '../redis/peer.js';
import { count, describe, failures, majorityFreeInMs, quorumOf, round, type Replies } from './quorum.js';

export type { RedlockNodeSpec } from './node.js';
export { quorumOf } from './quorum.js';

/** Options of {@link RedlockDriver}. Give exactly one of `nodes` or `url`. */
export interface RedlockDriverOptions {
  /**
   * The independent Redis nodes (not replicas of each other): `redis://[user:pass@]host:port[/db]`
   * (or `rediss://`) URLs, whose connections the driver opens and closes, or ioredis / node-redis
   * clients, which stay yours (never closed). At least one; no duplicates; an odd number (3, 5)
   * tolerates the most failures for its size.
   */
  nodes?: readonly RedlockNodeSpec[];
  /**
   * `redlock://[user:pass@]H1:P1,H2:P2,H3:P3[/db][?nodeTimeoutMs=..&retryJitterMs=..&prefix=..&tls=true]`:
   * the same nodes as one URL (credentials, db and tls apply to every node).
   */
  url?: string;
  /** Prefix of every key and channel. Default `dlock`. */
  prefix?: string;
  /**
   * How long a node may take to answer before it counts as unreachable, in ms (an acquisition
   * also stops waiting once its validity is gone). Default 2000.
   */
  nodeTimeoutMs?: number;
  /** After a split vote, a waiter retries after a random delay of up to this, in ms. Default 50. */
  retryJitterMs?: number;
  /** Where dlock reports what it handles (connection errors, retries); it never writes to the console. */
  logger?: Logger;
}

/** What a node answered to an acquisition. */
type AcquireAnswer =
  | { readonly granted: true; readonly token: bigint }
  | {
      readonly granted: false;
      readonly pttl: number;
      /** The holder's owner id, or what holds it ("shared holders", "free, a writer waits"). */
      readonly holder: string;
      /** Shared holders (and no exclusive one) hold it there. */
      readonly readers: boolean;
    };

/** "1<token>" | "0<pttl> <holder's value>" (see redlock-ops.lua; "|h[|w]": shared holders, "|x": a writer waits). */
function parseAcquire(line: string): AcquireAnswer {
  if (line.charCodeAt(0) === 49 /* '1' */) return { granted: true, token: BigInt(line.slice(1)) };
  const space = line.indexOf(' ');
  const value = line.slice(space + 1);
  const bar = value.indexOf('|');
  const readers = value.startsWith('|h');
  const holder = bar < 0 ? value : bar > 0 ? value.slice(0, bar) : readers ? 'shared holders' : 'free, a writer waits';
  return { granted: false, pttl: Number(line.slice(1, space)), holder, readers };
}

/**
 * What a node answered to a renewal: renewed (with the token it holds, and whether the hold is
 * shared), or not, and then whether no exclusive holder was there (`free`: a restore may fit;
 * `readers`: other shared holders were).
 */
type ExtendAnswer =
  | { readonly held: true; readonly token: bigint; readonly shared: boolean }
  | { readonly held: false; readonly free: boolean; readonly readers: boolean };

/** "1<token>[ s]" | "0" (another exclusive owner) | "2" (free) | "3" (other shared holders) (see redlock-ops.lua). */
function parseExtend(line: string): ExtendAnswer {
  if (line.charCodeAt(0) === 49 /* '1' */) {
    const shared = line.endsWith(' s');
    const token = shared ? line.slice(1, -2) : line.slice(1);
    return { held: true, token: /^\d+$/.test(token) ? BigInt(token) : 0n, shared };
  }
  return { held: false, free: line === '2' || line === '3', readers: line === '3' };
}

/** A renewal in flight, as its restores see it. */
interface Renewal {
  /** A release of the same owner started: restore nothing more. */
  released: boolean;
  /** Monotonic ms: the round's deadline, after which its answers restore nothing. */
  readonly deadline: number;
}

/** One holder as one node reports it. */
interface NodeState {
  readonly owner: string;
  readonly token: bigint;
  /** Remaining ms on that node (-1: no expiry). */
  readonly pttl: number;
  readonly shared: boolean;
}

/**
 * `key-state.lua`'s answer: [exclusive "<owner>|<token>[|w]" or "", its pttl, waiters, then per
 * shared holder: owner, "<remaining ms> <token> s 0 0"].
 */
function parseStates(raw: unknown): NodeState[] {
  if (!Array.isArray(raw)) return [];
  const r = raw as unknown[];
  const out: NodeState[] = [];
  const exclusive = typeof r[0] === 'string' ? r[0] : '';
  if (exclusive !== '') {
    const [owner = '', token = '0'] = exclusive.split('|');
    out.push({ owner, token: /^\d+$/.test(token) ? BigInt(token) : 0n, pttl: Number(r[1]), shared: false });
  }
  for (let i = 3; i + 1 < r.length; i += 2) {
    const [remaining = '0', token = '0'] = String(r[i + 1]).split(' ');
    out.push({ owner: String(r[i]), token: /^\d+$/.test(token) ? BigInt(token) : 0n, pttl: Number(remaining), shared: true });
  }
  return out;
}

const noop = (): void => undefined;

/** Why Redlock refuses `permits` (see the file header). */
const PERMITS_WHY =
  'each node counts only the permits granted on it, and holders need different majorities only, so more than the limit could hold at once';

/** Split rounds in a row a waiter holding the first node may keep its partial grants. */
const MAX_KEPT_ROUNDS = 8;

/**
 * A waiter's notifications: any node's release message wakes it. After a split vote the driver
 * holds it off for a random delay, so that contenders do not retry in lockstep.
 */
class RedlockWatch implements ChangeWatch {
  readonly latch: LatchWatch;
  private notBefore = 0;
  constructor(onClose: (w: RedlockWatch) => void) {
    this.latch = new LatchWatch(() => onClose(this));
  }
  holdOff(ms: number): void {
    this.notBefore = monotonicNow() + ms;
  }
  async next(maxMs: number, signal: AbortSignal): Promise<boolean | HandedOver> {
    const hold = Math.min(maxMs, this.notBefore - monotonicNow());
    if (hold > 0) {
      await sleep(hold, signal);
      return true;
    }
    return this.latch.next(maxMs, signal);
  }
  close(): void {
    this.latch.close();
  }
}

/** Subscribers of one release channel in this driver. */
interface Channel {
  readonly watches: Set<RedlockWatch>;
  readonly ready: Promise<void>;
}

/**
 * Locks over a majority of independent Redis nodes. See the file header for what it guarantees
 * and what it does not.
 *
 * @example
 * ```ts
 * import { LockClient } from 'dlock';
 * import { RedlockDriver } from 'dlock/redlock';
 * const locks = new LockClient(new RedlockDriver({
 *   nodes: ['redis://10.0.0.1:6379', 'redis://10.0.0.2:6379', 'redis://10.0.0.3:6379'],
 * }));
 * await locks.using('invoice:42', async (lease) => {
 *   // held on a majority; lease.token is the fencing token
 * });
 * await locks.close();
 * ```
 */
export class RedlockDriver implements TrySetDriver, MarkStore {
  readonly kind = 'try-set' as const;
  readonly info: DriverInfo = { name: 'redlock', liveness: 'lease', fair: false, scope: 'distributed', modes: ['exclusive', 'shared'], fairness: 'none' };
  /** Nodes that must agree: floor(N/2) + 1. */
  readonly quorum: number;
  private readonly nodes: readonly RedlockNode[];
  private readonly labels: readonly string[];
  /** Node i's shared tokens are the counter's values = residues[i] mod N (see redlock-ops.lua). */
  private readonly residues: readonly number[];
  private readonly prefix: string;
  private readonly nodeTimeoutMs: number;
  private readonly retryJitterMs: number;
  private readonly channels = new Map<string, Channel>();
  /** Owners in acquire(): how many split rounds in a row they kept their partial grants. */
  private readonly keptRounds = new Map<string, number>();
  /** Owners in acquire(): the QuorumError of their last attempt when it failed that way, else null. */
  /**
   * Renewals whose late answers may still restore the lock, by "<lock>\n<owner>" (see
   * restorer()); only those sent within the last nodeTimeoutMs.
   */
  private readonly renewals = new Map<string, Set<Renewal>>();
  /** Open waits by owner id (a split vote holds its waiter off). */
  private readonly waiting = new Map<string, RedlockWatch>();
  private closed = false;

  constructor(options: RedlockDriverOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError('RedlockDriver needs options: { nodes } or { url }.');
    }
    if ((options.nodes === undefined) === (options.url === undefined)) {
      throw new InvalidArgumentError('RedlockDriver needs exactly one of `nodes` (URLs or clients) or `url` (redlock://...).');
    }
    const fromUrl = options.url !== undefined ? parseRedlockUrl(options.url) : undefined;
    const raw: unknown = fromUrl?.nodes ?? options.nodes;
    if (!Array.isArray(raw) || raw.length === 0) throw new InvalidArgumentError('Redlock needs at least one node.');
    const specs = raw as readonly RedlockNodeSpec[];
    this.prefix = options.prefix ?? fromUrl?.prefix ?? 'dlock';
    if (typeof this.prefix !== 'string' || this.prefix.length === 0) throw new InvalidArgumentError('prefix must be a non-empty string.');
    this.nodeTimeoutMs = positiveInt('nodeTimeoutMs', options.nodeTimeoutMs ?? fromUrl?.nodeTimeoutMs, 2000);
    this.retryJitterMs = positiveInt('retryJitterMs', options.retryJitterMs ?? fromUrl?.retryJitterMs, 50);
    const labels = specs.map((s, i) => labelOf(s, i));
    if (specs.some((s) => typeof s === 'string')) ioredis(); // MissingPeerError (npm install ioredis) now
    const seen = new Set<unknown>();
    // Everything is checked before the first connection opens.
    specs.forEach((s, i) => {
      if (typeof s !== 'string' && !isIoRedis(s) && !isNodeRedis(s)) {
        throw new InvalidArgumentError(`Redlock node ${labels[i] ?? i} must be a redis:// URL, an ioredis client or a node-redis client.`);
      }
      const id = typeof s === 'string' ? nodeIdentity(s) : s;
      if (seen.has(id)) throw new InvalidArgumentError(`Redlock node ${labels[i] ?? i} is listed twice: every node must be a different server.`);
      seen.add(id);
    });
    this.labels = labels;
    // Each node's token residue: its rank among the labels, so clients listing the same nodes in
    // another order agree (see the file header on shared tokens).
    const ranked = labels.map((l, i) => ({ l, i })).sort((a, b) => (a.l < b.l ? -1 : a.l > b.l ? 1 : a.i - b.i));
    const residues = new Array<number>(labels.length).fill(0);
    ranked.forEach(({ i }, rank) => (residues[i] = rank));
    this.residues = residues;
    this.quorum = quorumOf(specs.length);
    this.nodes = specs.map((s, i) => new RedlockNode(s, labels[i] ?? `node${i + 1}`, this.nodeTimeoutMs, options.logger));
  }

  /** The node names (`host:port`) in the configured order, as {@link QuorumError} lists them. */
  get nodeLabels(): readonly string[] {
    return this.labels;
  }

  /** The Redis key of the lock `key` on every node (the fence counter is `<lock>:fence`). */
  lockKey(key: string): string {
    return `${this.prefix}:{${key}}`;
  }

  async tryAcquire(req: AcquireRequest, queue = false): Promise<TryResult> {
    this.assertOpen();
    if (req.admission?.mode === 'permits') {
      throw new UnsupportedModeError('redlock', 'semaphore permits', PERMITS_WHY, 'Use a Semaphore (it takes one Redlock lock per permit here), or a single Redis node.');
    }
    if (queue && this.nodes.length > 1) {
      // A waiter woken by a release first asks the first node alone: the one waiter it grants
      // goes on to the others, the rest go back to waiting without touching them. Without this
      // gate, every woken waiter grabs some nodes, nobody gets a majority, and the releases of
      // those partial grants wake everyone again.
      // A writer that readers keep out goes on to every node: its try there stops new readers
      // (<lock>:x, see redlock-ops.lua), which must happen on a majority to keep them out.
      const gate = await this.gate(req);
      if (gate !== undefined && !gate.granted && !(gate.readers && req.admission?.mode !== 'shared')) {
        return { ok: false, retryAfterMs: gate.pttl };
      }
    }
    return this.attempt(req, queue);
  }

  /**
   * The op of `req` on node `i`: `a`/`q` (exclusive) or `g`/`w` (shared, with the node's token
   * residue and the holder it may sit beside); see redlock-ops.lua.
   */
  private opFor(req: AcquireRequest, queue: boolean, i: number, lock: string): [OpCode, string, string, string] {
    if (req.admission?.mode !== 'shared') return [queue ? 'q' : 'a', lock, req.owner, String(req.ttlMs)];
    const ask = `${req.ttlMs} ${this.residues[i] ?? 0} ${this.nodes.length}${req.alongside !== undefined ? ` ${req.alongside}` : ''}`;
    return [queue ? 'w' : 'g', lock, req.owner, ask];
  }

  /** The first node's answer to a waiter's try; undefined when it gave none in time. */
  private async gate(req: AcquireRequest): Promise<AcquireAnswer | undefined> {
    const { outcome } = await round<AcquireAnswer, AcquireAnswer | null>({
      n: 1,
      send: () => this.node(0).op(...this.opFor(req, true, 0, this.lockKey(req.key))).then(parseAcquire),
      decide: (rs) => (rs[0]?.ok ? rs[0].value : null),
      timeoutMs: Math.max(1, Math.min(this.nodeTimeoutMs, req.ttlMs - driftFor(req.ttlMs))),
    });
    return outcome ?? undefined;
  }

  /** One round on every node at once. */
  private async attempt(req: AcquireRequest, queue: boolean): Promise<TryResult> {
    const n = this.nodes.length;
    const q = this.quorum;
    const lock = this.lockKey(req.key);
    const validFor = req.ttlMs - driftFor(req.ttlMs);
    const sentAt = monotonicNow();
    /** The quorum's token, fixed when the round is won (late grants are brought in line with it). */
    let token: bigint | undefined;
    // Past the validity no grant could be reported: stop waiting for stragglers then.
    const timeoutMs = Math.max(1, Math.min(this.nodeTimeoutMs, validFor));
    const { outcome, replies, complete } = await round<AcquireAnswer, { won: boolean; final: boolean }>({
      n,
      send: (i) => this.node(i).op(...this.opFor(req, queue, i, lock)).then(parseAcquire),
      decide: (rs, final) => {
        const granted = count(rs, (a) => a.granted);
        if (granted >= q) {
          token = maxToken(rs);
          return { won: true, final };
        }
        const against = rs.filter((r) => r !== undefined).length - granted;
        return against > n - q || final ? { won: false, final } : undefined;
      },
      timeoutMs,
      late: (i, reply, o) => {
        // Lost rounds already sent a release to every node that had not refused.
        if (o.won && reply.ok && reply.value.granted && token !== undefined && reply.value.token !== token) {
          this.node(i).op('c', lock, req.owner, token.toString()).catch(noop);
        }
      },
    });

    if (outcome.won && token !== undefined) {
      const t = token;
      const committed = replies.every((r) => !r?.ok || !r.value.granted || r.value.token === t) || (await this.commit(req, lock, t, sentAt + validFor));
      if (committed && monotonicNow() < sentAt + validFor) {
        this.keptRounds.delete(req.owner);
        return { ok: true, grant: { token: t, sentAt } };
      }
      // Too late (or the write-back failed): the grant is never reported; give it back everywhere.
      this.releaseEverywhere(lock, req.owner, replies);
      return { ok: false, retryAfterMs: this.splitDelay(req.owner) };
    }

    const partial = count(replies, (a) => a.granted);
    const pending = replies.filter((r) => r === undefined).length;
    // Nodes that did not answer by the deadline count as unreachable when the deadline was
    // nodeTimeoutMs; when it was the validity (a TTL too short for the round trip), the lock
    // simply could not be had in time: not an outage.
    const timedOut = outcome.final && timeoutMs === this.nodeTimeoutMs ? pending : 0;
    const unavailable = failures(replies) + timedOut > n - q;
    const first = replies[0];
    // Split vote among waiters: the one that holds the first node keeps its partial grants and
    // retries as soon as the others release theirs (their releases publish), so a split resolves
    // in about one round trip instead of colliding again. Bounded (a client that lists the nodes
    // in another order disagrees on "first"), then everyone falls back to the random delay.
    // Per wait (a queued try comes from a waiter whose watch is open); dropped on grant or cancel.
    const kept = queue ? (this.keptRounds.get(req.owner) ?? 0) : undefined;
    if (queue && !unavailable && kept !== undefined && kept < MAX_KEPT_ROUNDS && first?.ok && first.value.granted) {
      this.keptRounds.set(req.owner, kept + 1);
      return { ok: false, retryAfterMs: 1 + Math.floor(Math.random() * this.retryJitterMs) };
    }
    if (partial > 0 || pending > 0 || failures(replies) > 0) this.releaseEverywhere(lock, req.owner, replies);
    if (unavailable) {
      // Say what every node answered: wait for the stragglers (at most until the round's deadline).
      const all = await complete();
      const error = new QuorumError('acquire', req.key, q, this.answers(all, timeoutMs), 'too many nodes are unreachable or failing');
      throw this.quorumFailure(error);
    }
    // Without an answer from the first node nobody has priority, and a round cut short by the
    // validity says nothing about the holder: retry after a random delay.
    if ((partial > 0 && !first?.ok) || (outcome.final && pending > 0)) return { ok: false, retryAfterMs: this.splitDelay(req.owner) };
    // Otherwise wait for a release, bounded by when a majority could be free (our own partial
    // grants, just released, count as free).
    const remaining = replies.map((r) => (r?.ok ? (r.value.granted ? 0 : r.value.pttl) : undefined));
    return { ok: false, retryAfterMs: majorityFreeInMs(remaining, q) };
  }

  /**
   * A waiter gives up (called by the wait loop when it ends without a grant): give back any
   * partial grants it kept (see the split-vote rule in tryAcquire), on every node.
   */
  async cancel(key: string, owner: string): Promise<void> {
    this.keptRounds.delete(owner);
    if (this.closed) return;
    await this.release(key, owner).catch(noop);
  }

  async extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    this.assertOpen();
    const n = this.nodes.length;
    const q = this.quorum;
    let error: QuorumError | undefined;
    const results = await Promise.all(
      items.map(async (it) => {
        const lock = this.lockKey(it.key);
        const sentAt = monotonicNow();
        const timeoutMs = Math.min(this.nodeTimeoutMs, it.ttlMs);
        const restore = this.restorer(lock, it, sentAt, sentAt + timeoutMs);
        const { outcome, replies } = await round<ExtendAnswer, boolean | 'unknown'>({
          n,
          send: (i) => this.node(i).op('e', lock, it.owner, String(it.ttlMs)).then(parseExtend),
          decide: (rs, final) => decideYesNo(rs, n, q, final, (a) => a.held),
          timeoutMs,
          late: (i, reply, o) => {
            if (o === true && reply.ok) restore.late(i, reply.value);
          },
        });
        restore.settled(outcome === true ? replies : undefined);
        if (outcome !== 'unknown') return outcome;
        error ??= new QuorumError('extend', it.key, q, this.answers(replies, this.nodeTimeoutMs, extendAnswer), 'too many nodes are unreachable or failing');
        return false;
      }),
    );
    if (error) throw this.quorumFailure(error);
    return results;
  }

  /**
   * Restoring a renewed lock on the nodes that answered "free" (see the file header): only once
   * the renewal reached a majority, with the token that majority holds, for what is left of the
   * renewal's validity, and never after a release of the same owner started (a late restore
   * would leave the key behind on that node until its TTL). Answers after the round's deadline
   * restore nothing (the next renewal will), so a renewal is forgotten at its deadline.
   */
  private restorer(lock: string, it: ExtendItem, sentAt: number, deadline: number): {
    late(i: number, a: ExtendAnswer): void;
    settled(won: Replies<ExtendAnswer> | undefined): void;
  } {
    this.forgetRenewals(sentAt);
    const id = `${lock}\n${it.owner}`;
    const state: Renewal = { released: false, deadline };
    let set = this.renewals.get(id);
    if (!set) this.renewals.set(id, (set = new Set()));
    set.add(state);
    let token: bigint | undefined;
    /** The hold is shared (the majority said so): restored as a shared entry, beside other readers. */
    let shared = false;
    const pendingLate: number[] = [];
    const send = (i: number): void => {
      const now = monotonicNow();
      const left = it.ttlMs - driftFor(it.ttlMs) - (now - sentAt);
      if (state.released || this.closed || token === undefined || token === 0n || left < 1 || now > deadline) return;
      this.node(i).op('c', lock, it.owner, `${token} ${Math.floor(left)}${shared ? ' s' : ''}`).catch(noop);
    };
    return {
      late: (i, a) => {
        if (a.held || !a.free) return;
        if (token === undefined) pendingLate.push(i);
        else send(i);
      },
      settled: (won) => {
        if (!won) return;
        token = 0n;
        for (const r of won) {
          if (!r?.ok || !r.value.held) continue;
          if (r.value.token > token) token = r.value.token;
          shared ||= r.value.shared;
        }
        won.forEach((r, i) => {
          if (r?.ok && !r.value.held && r.value.free) send(i);
        });
        for (const i of pendingLate.splice(0)) send(i);
      },
    };
  }

  /** Drop the renewals whose round deadline has passed (their late answers restore nothing). */
  private forgetRenewals(now: number): void {
    for (const [id, set] of this.renewals) {
      for (const r of set) if (r.deadline < now) set.delete(r);
      if (set.size === 0) this.renewals.delete(id);
    }
  }

  async release(key: string, owner: string): Promise<boolean> {
    this.assertOpen();
    const n = this.nodes.length;
    const q = this.quorum;
    const lock = this.lockKey(key);
    // A renewal still in flight must not restore the lock on a node after this release.
    for (const r of this.renewals.get(`${lock}\n${owner}`) ?? []) r.released = true;
    const { outcome, replies } = await round<boolean, boolean | 'unknown'>({
      n,
      send: (i) => this.node(i).op('r', lock, owner, '').then((l) => l === '1'),
      decide: (rs, final) => decideYesNo(rs, n, q, final),
      timeoutMs: this.nodeTimeoutMs,
    });
    if (outcome === 'unknown') {
      throw this.quorumFailure(new QuorumError('release', key, q, this.answers(replies, this.nodeTimeoutMs, yesNo), 'too many nodes are unreachable or failing'));
    }
    return outcome;
  }

  /** The oldest holder a majority of nodes agrees on (see {@link keyState}); null when free. */
  async inspect(key: string): Promise<LockState | null> {
    return (await this.keyState(key)).holders[0] ?? null;
  }

  /**
   * Every holder that a majority of nodes holds (the exclusive one, or each shared one), oldest
   * grant first, read with key-state.lua on every node at once. Settles once no other owner could
   * still reach a majority with the nodes that have not answered (or failed); else QuorumError.
   * Waiters: 0 (no queue across nodes).
   */
  async keyState(key: string): Promise<KeyState> {
    this.assertOpen();
    const n = this.nodes.length;
    const q = this.quorum;
    const lock = this.lockKey(key);
    const { outcome, replies } = await round<NodeState[], LockState[] | 'unknown'>({
      n,
      send: (i) => this.node(i).run(scripts.keyState, [lock], []).then(parseStates),
      decide: (rs, final) => {
        const byOwner = new Map<string, NodeState[]>();
        for (const r of rs) if (r?.ok) for (const st of r.value) byOwner.set(st.owner, [...(byOwner.get(st.owner) ?? []), st]);
        const unknown = rs.filter((r) => r === undefined || !r.ok).length;
        // An owner not seen yet could still hold a majority on the unknown nodes.
        let decided = unknown < q;
        const holders: LockState[] = [];
        for (const states of byOwner.values()) {
          if (states.length >= q) holders.push(stateOf(states, q));
          else if (states.length + unknown >= q) decided = false;
        }
        if (decided) return holders.sort((a, b) => (a.token < b.token ? -1 : a.token > b.token ? 1 : 0));
        return final ? 'unknown' : undefined;
      },
      timeoutMs: this.nodeTimeoutMs,
    });
    if (outcome === 'unknown') {
      throw this.quorumFailure(
        new QuorumError('inspect', key, q, this.answers(replies, this.nodeTimeoutMs, (ss) => (ss.length > 0 ? { answer: 'held', detail: ss.map((x) => x.owner).join(', ') } : { answer: 'done', detail: 'free' }))),
      );
    }
    return { holders: outcome, waiters: 0 };
  }

  /**
   * One page of held keys: each node is SCANned in turn (sorted by `host:port`), and a key it has
   * is given when a majority holds it ({@link inspect}) and no node scanned before it has it (that
   * node's scan gave it already). A node whose scan fails is skipped and remembered in the cursor:
   * a later node then gives the keys that node also holds (a skipped node's copy proves nothing).
   * More than N - quorum skipped nodes: {@link QuorumError} (a majority-held key could live only
   * on the skipped ones). A node scanned whole within this call counts as having given exactly
   * the keys this call gave, so a copy that lands on it after its scan (still on its way when
   * `acquire` resolved on a majority) does not hide the key. Keys whose copies change while a
   * listing spans several pages (being acquired, released, restored on a restarted node) may be
   * named twice or not at all, as with SCAN itself.
   */
  async list(prefix: string, page: { readonly cursor?: string; readonly limit: number }): Promise<KeyPage> {
    this.assertOpen();
    const { inner, skipped } = decodeListCursor(page.cursor);
    const order = this.nodes.map((node, i) => ({ node, i, label: this.labels[i] ?? node.label })).sort((a, b) => (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
    /** Why a scan failed in this call (a skipped node from an earlier page has no entry). */
    const failed = new Map<string, string>();
    const tooMany = (): QuorumError =>
      new QuorumError(
        'list',
        prefix,
        this.quorum,
        order.map(({ label }) => (skipped.has(label) ? { node: label, answer: 'unreachable' as const, detail: failed.get(label) ?? 'its scan failed earlier in this listing' } : { node: label, answer: 'done' as const })),
        'too many nodes could not be scanned',
      );
    if (skipped.size > this.nodes.length - this.quorum) throw this.quorumFailure(tooMany());
    // Nodes scanned from start to end within this call, and the names this call gave: such a node
    // gave a key exactly when this call gave it. A key that lands on it after its scan (a grant's
    // last node answering after the grant resolved, or a grant completing its majority meanwhile)
    // is not taken as given there; only for a node scanned on an earlier page does the check
    // fall back to whether the node has the key now.
    const startedHere = new Set<string>();
    const scannedHere = new Set<string>();
    const given = new Set<string>();
    const scanners = order.map(({ node, label }, rank): ScanNode => ({
      address: label,
      scan: async (cursor, match, count) => {
        if (cursor === '0') startedHere.add(label);
        let batch;
        try {
          batch = await (await node.scanNode()).scan(cursor, match, count);
        } catch (e) {
          failed.set(label, e instanceof Error ? e.message : String(e));
          skipped.add(label);
          if (skipped.size > this.nodes.length - this.quorum) throw this.quorumFailure(tooMany());
          return { cursor: '0', keys: [] };
        }
        const keys: string[] = [];
        const earlier = order.slice(0, rank).filter(({ label: l }) => !skipped.has(l) && !scannedHere.has(l));
        for (const name of batch.keys) {
          const key = lockKeyName(this.prefix, name, false);
          if (key === undefined || !key.startsWith(prefix) || this.lockKey(key) !== name || given.has(name)) continue;
          const seen = await Promise.all(earlier.map(({ node: e }) => e.run(scripts.inspect, [name], []).then((r) => Boolean(r), () => false)));
          if (seen.some(Boolean)) continue;
          if ((await this.inspect(key)) !== null) {
            keys.push(name);
            given.add(name);
          }
        }
        if (batch.cursor === '0' && startedHere.has(label)) scannedHere.add(label);
        return { cursor: batch.cursor, keys };
      },
    }));
    const out = await scanPage(scanners, lockPattern(this.prefix, prefix, false), { limit: page.limit, ...(inner === undefined ? {} : { cursor: inner }) }, (name) => lockKeyName(this.prefix, name, false));
    if (out.cursor === undefined || skipped.size === 0) return out;
    return { keys: out.keys, cursor: JSON.stringify({ page: out.cursor, skipped: [...skipped].sort() }) };
  }

  /**
   * Delete `key` on every node that answers, whoever holds it there, publishing its release
   * (waiters wake); then raise every node's fence counter to the highest one seen (the `c` op
   * with no owner), so that any later majority, which shares a node with the majority that
   * answered, grants a token above `fence`. Counters are never reset. Needs a majority of nodes
   * to answer (else {@link QuorumError}): with fewer, a majority may still hold the key.
   * `released`: 1 when the key was held by one owner on a majority of nodes (counting nodes that
   * did not answer as holding it), else 0.
   */
  async forceRelease(key: string): Promise<ForceReleased> {
    this.assertOpen();
    const n = this.nodes.length;
    const q = this.quorum;
    const lock = this.lockKey(key);
    for (const [id, set] of this.renewals) if (id.startsWith(`${lock}\n`)) for (const r of set) r.released = true;
    type Deleted = { fence: bigint; owner: string | undefined; shared: string[] };
    const { outcome, replies } = await round<Deleted, Replies<Deleted>>({
      n,
      send: (i) =>
        this.node(i)
          .op('f', lock, '', '')
          .then((line) => {
            // "<fence> <exclusive value or nothing>[ <shared owner>...]"
            const [fence = '0', held = '', ...shared] = line.split(' ');
            return { fence: BigInt(fence), owner: held === '' ? undefined : held.slice(0, held.indexOf('|')), shared };
          }),
      decide: (rs, final) => (final ? rs : undefined),
      timeoutMs: this.nodeTimeoutMs,
    });
    const answered = count(outcome, () => true);
    if (answered < q) {
      const detail = (r: Deleted): string => (r.owner === undefined && r.shared.length === 0 ? 'free' : `deleted ${[...(r.owner !== undefined ? [r.owner] : []), ...r.shared].join(', ')}`);
      throw this.quorumFailure(new QuorumError('forceRelease', key, q, this.answers(replies, this.nodeTimeoutMs, (r) => ({ answer: 'done', detail: detail(r) })), 'too many nodes are unreachable or failing'));
    }
    let fence = 0n;
    const owners = new Map<string, number>();
    const readers = new Map<string, number>();
    for (const r of outcome) {
      if (!r?.ok) continue;
      if (r.value.fence > fence) fence = r.value.fence;
      if (r.value.owner !== undefined) owners.set(r.value.owner, (owners.get(r.value.owner) ?? 0) + 1);
      for (const o of r.value.shared) readers.set(o, (readers.get(o) ?? 0) + 1);
    }
    // Holds that may have had a majority: at most one exclusive one, and every such shared one.
    const majority = (m: Map<string, number>): number => [...m.values()].filter((c) => c + (n - answered) >= q).length;
    const released = (majority(owners) > 0 ? 1 : 0) + majority(readers);
    // Best effort: a node that misses it still has its own counter, and any later majority
    // includes a node that answered above.
    await Promise.all(this.nodes.map((node) => node.op('c', lock, '', fence.toString()).catch(() => undefined)));
    return { released, fence };
  }

  /** The highest mark a majority of nodes knows (a raise reached a majority, which shares a node with any other). */
  async readMark(key: string): Promise<bigint> {
    this.assertOpen();
    const q = this.quorum;
    const mark = `${this.lockKey(key)}:mark`;
    const { outcome, replies } = await round<bigint, bigint | 'unknown'>({
      n: this.nodes.length,
      send: (i) => this.node(i).run(scripts.readMark, [mark], []).then((r) => (typeof r === 'string' || typeof r === 'number' ? BigInt(r) : 0n)),
      decide: (rs, final) => {
        if (count(rs, () => true) < q) return final ? 'unknown' : undefined;
        let max = 0n;
        for (const r of rs) if (r?.ok && r.value > max) max = r.value;
        return max;
      },
      timeoutMs: this.nodeTimeoutMs,
    });
    if (outcome === 'unknown') throw this.quorumFailure(new QuorumError('readMark', key, q, this.answers(replies, this.nodeTimeoutMs, () => ({ answer: 'done' }))));
    return outcome;
  }

  /** Raise the mark on every node where `owner` holds the lock; true when a majority did. */
  async raiseMark(key: string, owner: string, mark: bigint): Promise<boolean> {
    this.assertOpen();
    const n = this.nodes.length;
    const q = this.quorum;
    const lock = this.lockKey(key);
    const { outcome, replies } = await round<boolean, boolean | 'unknown'>({
      n,
      send: (i) => this.node(i).run(scripts.raiseMark, [lock, `${lock}:mark`], [owner, mark.toString()]).then((r) => Number(r) === 1),
      decide: (rs, final) => decideYesNo(rs, n, q, final),
      timeoutMs: this.nodeTimeoutMs,
    });
    if (outcome === 'unknown') throw this.quorumFailure(new QuorumError('raiseMark', key, q, this.answers(replies, this.nodeTimeoutMs, yesNo)));
    return outcome;
  }

  /**
   * Open a waiter's notifications: subscribe to the lock's release channel on every node. Ready
   * once a majority of the subscriptions (or every reachable node's) are confirmed.
   */
  async watch(key: string, owner: string): Promise<ChangeWatch> {
    this.assertOpen();
    const name = `${this.lockKey(key)}:released`;
    let channel = this.channels.get(name);
    if (!channel) {
      channel = { watches: new Set(), ready: this.subscribeAll(name) };
      channel.ready.catch(noop);
      this.channels.set(name, channel);
    }
    const ch = channel;
    const watch = new RedlockWatch((w) => {
      if (this.waiting.get(owner) === w) this.waiting.delete(owner);
      ch.watches.delete(w);
      if (ch.watches.size === 0 && this.channels.get(name) === ch) {
        this.channels.delete(name);
        for (const node of this.nodes) node.subscriber(this.onMessage).then((s) => s.unsubscribe(name)).catch(noop);
      }
    });
    ch.watches.add(watch);
    this.waiting.set(owner, watch);
    try {
      await ch.ready;
    } catch (e) {
      watch.close();
      throw e;
    }
    return watch;
  }

  /** Number of waits with an open watch (lets tests check that finished waits leave nothing). */
  get openWatches(): number {
    return this.waiting.size;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.channels.clear();
    this.waiting.clear();
    this.renewals.clear();
    await Promise.all(this.nodes.map((n) => n.close()));
  }

  private readonly onMessage = (channel: string): void => {
    for (const w of this.channels.get(channel)?.watches ?? []) w.latch.changed();
  };

  private subscribeAll(name: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let ok = 0;
      let failed = 0;
      let lastError: unknown;
      const n = this.nodes.length;
      const timer = setTimeout(() => (ok > 0 ? resolve() : reject(new UnavailableError(`Subscribing to ${name}`, { cause: lastError }))), this.nodeTimeoutMs);
      const check = (): void => {
        if (ok >= this.quorum || (ok > 0 && ok + failed === n)) {
          clearTimeout(timer);
          resolve();
        } else if (failed === n) {
          clearTimeout(timer);
          reject(new UnavailableError(`Subscribing to ${name} on every Redlock node`, { cause: lastError }));
        }
      };
      for (const node of this.nodes) {
        node
          .subscriber(this.onMessage)
          .then((s) => s.subscribe(name))
          .then(
            () => {
              ok++;
              check();
            },
            (e: unknown) => {
              failed++;
              lastError = e;
              check();
            },
          );
      }
    });
  }

  /**
   * Write the quorum's token back: every node's counter becomes at least `token`, and nodes
   * holding our lock carry it. True once a majority holds the lock with `token`.
   */
  private async commit(req: AcquireRequest, lock: string, token: bigint, validUntil: number): Promise<boolean> {
    const n = this.nodes.length;
    const q = this.quorum;
    const { outcome } = await round<boolean, boolean>({
      n,
      // Nodes that refused need their counter raised as much as the others: a later majority may be made of them.
      send: (i) => this.node(i).op('c', lock, req.owner, token.toString()).then((l) => l === '1'),
      decide: (rs, final) => {
        const d = decideYesNo(rs, n, q, final);
        return d === undefined ? undefined : d === true;
      },
      timeoutMs: Math.max(1, Math.min(this.nodeTimeoutMs, validUntil - monotonicNow())),
    });
    return outcome;
  }

  /** Give a lock back on every node that did not refuse it (pending ones may still grant). */
  private releaseEverywhere(lock: string, owner: string, replies: Replies<AcquireAnswer>): void {
    this.nodes.forEach((node, i) => {
      const r = replies[i];
      if (r?.ok && !r.value.granted) return;
      node.op('r', lock, owner, '').catch(noop);
    });
  }

  /** A random delay after a split vote; holds the owner's waiter off for as long. */
  private splitDelay(owner: string): number {
    const ms = 1 + Math.floor(Math.random() * this.retryJitterMs);
    this.waiting.get(owner)?.holdOff(ms);
    return ms;
  }

  /** `timedOutAfterMs`: the round ended at its deadline (pending nodes did not answer in time). */
  private answers<T>(
    replies: Replies<T>,
    timedOutAfterMs: number | undefined,
    ok?: (value: T) => Pick<NodeAnswer, 'answer' | 'detail'>,
  ): NodeAnswer[] {
    const acquireAnswer = (v: unknown): Pick<NodeAnswer, 'answer' | 'detail'> => {
      const a = v as AcquireAnswer;
      return a.granted ? { answer: 'granted', detail: `token ${a.token}` } : { answer: 'held', detail: a.holder };
    };
    return describe(this.labels, replies, ok ?? acquireAnswer, timedOutAfterMs !== undefined ? `no answer within ${Math.round(timedOutAfterMs)} ms` : 'no answer yet (the round was already decided)');
  }

  private node(i: number): RedlockNode {
    const node = this.nodes[i];
    if (!node) throw new Error(`dlock redlock: no node ${i}`);
    return node;
  }

  private assertOpen(): void {
    if (this.closed) throw new ClosedError('redlock driver');
    const misconfigured = this.configFailure();
    if (misconfigured) throw misconfigured;
  }

  /**
   * The db error of the nodes (see `IoRedisAdapter`: a `SELECT <db>` the server refused) once so
   * many nodes have it that no majority can ever be had; undefined otherwise (a minority of bad
   * nodes is tolerated like any failed minority).
   */
  private configFailure(): OutOfRangeError | undefined {
    let bad: OutOfRangeError | undefined;
    let count = 0;
    for (const node of this.nodes) {
      if (node.dbError) {
        bad ??= node.dbError;
        count++;
      }
    }
    return count > this.nodes.length - this.quorum ? bad : undefined;
  }

  /** A quorum failure, or the db error behind it (see {@link configFailure}). */
  private quorumFailure(e: unknown): unknown {
    return this.configFailure() ?? e;
  }
}

/** Yes/no votes: true with a majority of yes, false once a majority of yes is out of reach. */
function decideYesNo<T = boolean>(rs: Replies<T>, n: number, q: number, final: boolean, isYes: (v: T) => boolean = (v) => v === true): boolean | 'unknown' | undefined {
  const yes = count(rs, isYes);
  if (yes >= q) return true;
  const no = count(rs, (v) => !isYes(v));
  if (no > n - q) return false;
  return final ? 'unknown' : undefined;
}

const yesNo = (v: boolean): Pick<NodeAnswer, 'answer'> => ({ answer: v ? 'done' : 'not-held' });
const extendAnswer = (a: ExtendAnswer): Pick<NodeAnswer, 'answer' | 'detail'> =>
  a.held
    ? { answer: 'done', detail: `token ${a.token}` }
    : { answer: 'not-held', detail: a.readers ? 'held by shared holders' : a.free ? 'free' : 'held by another owner' };

/** The highest token among the grants so far. */
function maxToken(rs: Replies<AcquireAnswer>): bigint {
  let max = 0n;
  for (const r of rs) if (r?.ok && r.value.granted && r.value.token > max) max = r.value.token;
  return max;
}

/** The holder as a majority sees it: the token most of its nodes carry, and how long a majority still holds it. */
function stateOf(states: readonly NodeState[], q: number): LockState {
  const votes = new Map<bigint, number>();
  for (const s of states) votes.set(s.token, (votes.get(s.token) ?? 0) + 1);
  let token = 0n;
  let best = 0;
  for (const [t, v] of votes) if (v > best || (v === best && t > token)) [token, best] = [t, v];
  const ttls = states.map((s) => (s.pttl < 0 ? Number.POSITIVE_INFINITY : s.pttl)).sort((a, b) => b - a);
  const remaining = ttls[q - 1] ?? 0;
  return {
    owner: states[0]?.owner ?? '',
    token,
    remainingMs: Number.isFinite(remaining) ? remaining : -1,
    ...(states[0]?.shared === true ? { admission: { mode: 'shared' } as const } : {}),
  };
}

function positiveInt(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (!Number.isInteger(v) || v < 1 || v > 2 ** 31 - 1) throw new OutOfRangeError(name, `${name} must be a positive integer of ms, got ${String(v)}.`);
  return v;
}

function labelOf(spec: RedlockNodeSpec, i: number): string {
  if (typeof spec === 'string') {
    try {
      const u = new URL(spec);
      return `${u.hostname}:${u.port || '6379'}`;
    } catch {
      throw new InvalidArgumentError(`Redlock node ${i + 1} is not a valid URL: ${JSON.stringify(spec)}; use redis://host:port.`);
    }
  }
  const o = (spec as { options?: { host?: unknown; port?: unknown; socket?: { host?: unknown; port?: unknown } } }).options;
  const host = o?.host ?? o?.socket?.host;
  const port = o?.port ?? o?.socket?.port;
  return typeof host === 'string' && (typeof port === 'number' || typeof port === 'string') ? `${host}:${port}` : `node${i + 1}`;
}

/** Two URLs naming the same server and db are the same node. */
function nodeIdentity(url: string): string {
  const u = new URL(url);
  if (!/^rediss?:$/i.test(u.protocol)) throw new InvalidArgumentError(`Redlock node URL must be redis:// or rediss://, got ${JSON.stringify(url)}.`);
  const host = u.hostname === 'localhost' ? '127.0.0.1' : u.hostname;
  return `${host}:${u.port || '6379'}/${u.pathname.replace(/^\//, '') || '0'}`;
}

/** What a `redlock://` URL says. */
export interface ParsedRedlockUrl {
  /** `redis://host:port` of each node. */
  readonly nodes: string[];
  /** From `prefix=...`. */
  readonly prefix?: string;
  /** From `nodeTimeoutMs=N`. */
  readonly nodeTimeoutMs?: number;
  /** From `retryJitterMs=N`. */
  readonly retryJitterMs?: number;
}

/**
 * Parse `redlock://[user:pass@]H1:P1,H2:P2,H3:P3[/db][?nodeTimeoutMs=&retryJitterMs=&prefix=&tls=true]`
 * into one `redis://` (or `rediss://` with `tls=true`) URL per node.
 */
export function parseRedlockUrl(url: string): ParsedRedlockUrl {
  const m = /^redlock:\/\/(?:([^@/?#]*)@)?([^/?#]*)(\/[^?#]*)?(?:\?([^#]*))?$/i.exec(typeof url === 'string' ? url : '');
  if (!m) throw new InvalidArgumentError(`"${String(url)}" is not a Redlock URL: use redlock://host1:port1,host2:port2,host3:port3.`);
  const [, auth, hostList = '', path = '', query = ''] = m;
  const params = new URLSearchParams(query);
  const known = new Set(['nodeTimeoutMs', 'retryJitterMs', 'prefix', 'tls']);
  for (const k of params.keys()) {
    if (!known.has(k)) throw new InvalidArgumentError(`Unknown Redlock URL option "${k}"; known: ${[...known].join(', ')}.`);
  }
  const hosts = hostList.split(',').map((h) => h.trim());
  if (hosts.some((h) => h.length === 0)) throw new InvalidArgumentError(`"${url}" has an empty host: list nodes as host:port,host:port.`);
  const tls = params.get('tls');
  const scheme = tls === 'true' || tls === '1' ? 'rediss' : 'redis';
  const num = (k: string): number | undefined => {
    const v = params.get(k);
    if (v === null) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new OutOfRangeError(k, `Redlock URL option ${k} must be a positive integer, got "${v}".`);
    return n;
  };
  const prefix = params.get('prefix') ?? undefined;
  return {
    nodes: hosts.map((h) => `${scheme}://${auth ? `${auth}@` : ''}${h}${path}`),
    ...(prefix !== undefined ? { prefix } : {}),
    ...(num('nodeTimeoutMs') !== undefined ? { nodeTimeoutMs: num('nodeTimeoutMs') } : {}),
    ...(num('retryJitterMs') !== undefined ? { retryJitterMs: num('retryJitterMs') } : {}),
  };
}

/** A Redlock listing cursor: scanPage's own, or `{ page, skipped }` once a node's scan failed. */
function decodeListCursor(cursor: string | undefined): { inner: string | undefined; skipped: Set<string> } {
  if (cursor === undefined || !cursor.startsWith('{')) return { inner: cursor, skipped: new Set() };
  try {
    const c = JSON.parse(cursor) as { page?: unknown; skipped?: unknown };
    if (typeof c.page === 'string' && Array.isArray(c.skipped) && c.skipped.every((x) => typeof x === 'string')) {
      return { inner: c.page, skipped: new Set(c.skipped) };
    }
  } catch {
    // reported below
  }
  throw new InvalidArgumentError(`list() cursor ${JSON.stringify(cursor)} is not one this driver returned: pass back a page's cursor unchanged.`);
}
