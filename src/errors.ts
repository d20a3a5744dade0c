/**
 * Every error dlock throws carries a stable `code` and a message that says what to do.
 * Errors about caller input extend the built-in `TypeError` / `RangeError` so that generic
 * handlers keep working; everything else extends {@link DlockError}.
 */

/** The codes of all errors dlock throws. */
export type DlockErrorCode =
  | 'DLOCK_INVALID_ARGUMENT'
  | 'DLOCK_OUT_OF_RANGE'
  | 'DLOCK_TIMEOUT'
  | 'DLOCK_ABORTED'
  | 'DLOCK_LOCK_LOST'
  | 'DLOCK_NOT_HELD'
  | 'DLOCK_UNAVAILABLE'
  | 'DLOCK_CLOSED'
  | 'DLOCK_UNSUPPORTED_URL'
  | 'DLOCK_STALE_TOKEN'
  | 'DLOCK_DRIVER_ERROR'
  | 'DLOCK_UNSUPPORTED_DRIVER'
  | 'DLOCK_UNSUPPORTED_MODE'
  | 'DLOCK_IDS_EXHAUSTED'
  | 'DLOCK_IDS_REGRESSED'
  | 'DLOCK_CLOCK_BACKWARDS'
  | 'DLOCK_WORKER_LEASE_LOST'
  | 'DLOCK_WORKER_MARK_STALLED'
  | 'DLOCK_NO_FREE_WORKER'
  | 'DLOCK_MISSING_PEER'
  | 'DLOCK_NATIVE_MODULE'
  | 'DLOCK_NOT_FOUND'
  | 'DLOCK_PERMISSION_DENIED';

/** Base class of the errors that are not about caller input. */
export class DlockError extends Error {
  /** Stable code of the error, `DLOCK_...`: match on it rather than on the message. */
  readonly code: DlockErrorCode;
  constructor(code: DlockErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A key or option of the wrong type (for example an empty key). */
export class InvalidArgumentError extends TypeError {
  /** Always `DLOCK_INVALID_ARGUMENT`. */
  readonly code = 'DLOCK_INVALID_ARGUMENT' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'InvalidArgumentError';
  }
}

/** A numeric option out of its range (NaN, Infinity, negative, fractional, above 2^31-1...). */
export class OutOfRangeError extends RangeError {
  /** Always `DLOCK_OUT_OF_RANGE`. */
  readonly code = 'DLOCK_OUT_OF_RANGE' as const;
  /** The name of the offending option, e.g. `ttlMs`. */
  readonly option: string;
  constructor(option: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OutOfRangeError';
    this.option = option;
  }
}

/** `acquire()` waited `waitMs` and the lock never became free. */
export class LockTimeoutError extends DlockError {
  /** The lock key. */
  readonly key: string;
  /** How long the acquire waited, in ms. */
  readonly waitMs: number;
  constructor(key: string, waitMs: number, options?: { cause?: unknown }) {
    super(
      'DLOCK_TIMEOUT',
      `Timed out after ${waitMs} ms waiting for lock "${key}". Raise waitMs, use tryAcquire() to not wait, ` +
        'or run `dlock inspect` to see who holds it.',
      options,
    );
    this.key = key;
    this.waitMs = waitMs;
  }
}

/** The caller's AbortSignal aborted a wait; `cause` is the signal's reason. */
export class LockAbortedError extends DlockError {
  /** The lock key. */
  readonly key: string;
  constructor(key: string, reason: unknown) {
    super('DLOCK_ABORTED', `Waiting for lock "${key}" was aborted by the caller's signal; nothing is held.`, {
      cause: reason,
    });
    this.key = key;
  }
}

/** Why a held lock was lost. */
export type LockLostReason =
  /** The local monotonic deadline passed without a successful renewal (network down, process paused). */
  | 'expired'
  /** The engine says the key is no longer ours (removed, expired there, or taken by another owner). */
  | 'not-held'
  /** Renewal stopped on purpose because `maxHoldMs` was reached. */
  | 'max-hold'
  /** The driver's session (ZooKeeper session, etcd lease, SQL connection) ended. */
  | 'session-lost'
  /** The client was closed while the lock was held. */
  | 'closed';

/**
 * The lock is no longer held. This is the reason of `lease.signal` when it aborts, and what
 * `lease.assertHeld()` / `lease.extend()` throw. Stop touching the protected resource.
 */
export class LockLostError extends DlockError {
  /** The lock key. */
  readonly key: string;
  /** Why the lock was lost. */
  readonly reason: LockLostReason;
  constructor(key: string, reason: LockLostReason, options?: { cause?: unknown }) {
    const what: Record<LockLostReason, string> = {
      expired: 'its TTL ran out locally before a renewal succeeded (engine unreachable or the process was paused)',
      'not-held': 'the engine no longer records this owner as the holder (the key expired, was deleted, or another owner took it)',
      'max-hold': 'maxHoldMs was reached, so renewal stopped and the TTL ran out',
      'session-lost': "the driver's session with the engine ended",
      closed: 'the client was closed',
    };
    super(
      'DLOCK_LOCK_LOST',
      `Lock "${key}" was lost: ${what[reason]}. Stop writing to the protected resource and acquire again; use fencing tokens to reject late writes.`,
      options,
    );
    this.key = key;
    this.reason = reason;
  }
}

/** `extend()` on a lease that was released or lost. */
export class LockNotHeldError extends DlockError {
  /** The lock key. */
  readonly key: string;
  constructor(key: string, detail: string) {
    super('DLOCK_NOT_HELD', `Lock "${key}" is not held by this lease (${detail}). Acquire it again.`);
    this.key = key;
  }
}

/** The engine could not be reached or answered with an error within the wait. */
export class UnavailableError extends DlockError {
  constructor(what: string, options?: { cause?: unknown }) {
    super(
      'DLOCK_UNAVAILABLE',
      `${what}: the lock engine is unreachable or failing. Check that it is running and reachable; ` +
        'the operation can be retried once it is back.',
      options,
    );
  }
}

/** What one node of a quorum answered (see {@link QuorumError}). */
export interface NodeAnswer {
  /** The node, as `host:port`. */
  readonly node: string;
  /**
   * `granted`: it gave (or confirmed) the lock to us; `held`: another owner holds it there;
   * `not-held`: we do not hold it there (extend, release); `done`: it did what was asked;
   * `unreachable`: no connection, or no answer in time; `error`: it answered with an error
   * (a script error, a READONLY replica, a wrong password...).
   */
  readonly answer: 'granted' | 'held' | 'not-held' | 'done' | 'unreachable' | 'error';
  /** With `held`: the other owner's id. With `unreachable` / `error`: what went wrong. */
  readonly detail?: string;
}

/**
 * A quorum driver (Redlock) could not get a majority of its nodes to agree, and the reason is not
 * simply that another owner holds the lock: too many nodes are unreachable or failing, or the
 * answers came back too late to leave any validity. `answers` lists what each node said. It is an
 * {@link UnavailableError} (code `DLOCK_UNAVAILABLE`), so handlers of unavailability catch it too.
 */
export class QuorumError extends UnavailableError {
  /** What was attempted: `acquire`, `extend`, `release`, `inspect`, ... */
  readonly operation: string;
  /** Nodes that must agree: floor(N/2) + 1. */
  readonly quorum: number;
  /** One entry per node, in the configured order. */
  readonly answers: readonly NodeAnswer[];
  constructor(operation: string, key: string, quorum: number, answers: readonly NodeAnswer[], why?: string) {
    const list = answers.map((a) => `${a.node} ${a.answer}${a.detail ? ` (${a.detail})` : ''}`).join(', ');
    const agreed = answers.filter((a) => a.answer === 'granted' || a.answer === 'done').length;
    super(
      `Redlock ${operation} of "${key}" needs ${quorum} of ${answers.length} nodes and got ${agreed}` +
        `${why ? `: ${why}` : ''}. Nodes answered: ${list}`,
    );
    this.name = 'QuorumError';
    this.operation = operation;
    this.quorum = quorum;
    this.answers = answers;
  }
}

/** The client (or driver) was closed; create a new one. */
export class ClosedError extends DlockError {
  constructor(what: string) {
    super('DLOCK_CLOSED', `${what}: the lock client was closed. Create a new client to continue.`);
  }
}

/** `connect(url)` got a scheme no driver handles. */
export class UnsupportedUrlError extends DlockError {
  constructor(url: string, supported: readonly string[]) {
    super(
      'DLOCK_UNSUPPORTED_URL',
      `Cannot connect to "${url}": use one of the schemes ${supported.map((s) => `${s}:`).join(', ')}.`,
    );
  }
}

/**
 * A fenced write, or a fenced read (read-and-advance), carried a token lower than one the
 * resource has already seen: a newer holder has read or written it, so this holder's lock was lost.
 */
export class StaleTokenError extends DlockError {
  /** The token the refused write carried. */
  readonly token: bigint;
  /** The highest token the resource had accepted. */
  readonly highest: bigint;
  /** Which fenced operation was refused. */
  readonly operation: 'read' | 'write';
  constructor(resource: string, token: bigint, highest: bigint, operation: 'read' | 'write' = 'write') {
    super(
      'DLOCK_STALE_TOKEN',
      `${operation === 'read' ? 'Read of' : 'Write to'} "${resource}" refused: fencing token ${token} is older than ${highest}, which the resource has already seen. ` +
        'Your lock was lost meanwhile; re-acquire and re-read before writing.',
    );
    this.token = token;
    this.highest = highest;
    this.operation = operation;
  }
}

/** The driver lacks an optional capability the caller needs (for example `allocateRange` for segment ids). */
export class UnsupportedDriverError extends DlockError {
  /** The driver's `info.name`. */
  readonly driver: string;
  /** The missing driver method. */
  readonly capability: string;
  constructor(driver: string, capability: string, what: string) {
    super(
      'DLOCK_UNSUPPORTED_DRIVER',
      `The "${driver}" driver cannot serve ${what}: it does not implement ${capability}(). ` +
        'Use a driver that does (memory, redis, sqlite).',
    );
    this.driver = driver;
    this.capability = capability;
  }
}

/**
 * The driver cannot grant an admission mode safely (a read-write lock, a semaphore) or cannot
 * offer the fairness asked for. Thrown when the primitive is constructed, before anything waits.
 */
export class UnsupportedModeError extends DlockError {
  /** The driver's `info.name`. */
  readonly driver: string;
  /** What was asked: `shared`, `permits`, `fair`. */
  readonly mode: string;
  constructor(driver: string, mode: string, why: string, instead: string) {
    super('DLOCK_UNSUPPORTED_MODE', `The "${driver}" driver cannot grant ${mode}: ${why}. ${instead}`);
    this.driver = driver;
    this.mode = mode;
  }
}

/** An id generator ran out of ids: a counter reached its largest value (int64, or the k digits of a daily id). */
export class IdsExhaustedError extends DlockError {
  /** The name of the generator (its counter). */
  readonly generator: string;
  constructor(generator: string, detail: string) {
    super('DLOCK_IDS_EXHAUSTED', `No more ids for "${generator}": ${detail}.`);
    this.generator = generator;
  }
}

/**
 * An engine handed out a range at or below ids this generator has already issued: its counter went
 * backwards (typically Redis restarted or failed over without durable writes). The range is
 * discarded, so no duplicate is issued by this generator; other generators on the same counter may
 * already have issued duplicates. Make the engine's writes durable (Redis: `appendonly yes`,
 * `appendfsync always`) and raise the counter above the highest id ever issued.
 */
export class IdsRegressedError extends DlockError {
  /** The counter (generator name) that went back. */
  readonly counter: string;
  /** The highest id this generator had issued or held. */
  readonly highest: bigint;
  /** The end of the range the engine just answered. */
  readonly received: bigint;
  constructor(counter: string, highest: bigint, received: bigint) {
    super(
      'DLOCK_IDS_REGRESSED',
      `The counter "${counter}" went backwards: the engine answered a range ending at ${received}, but ids up to ${highest} ` +
        'were already handed out. Nothing was issued from it. Make the engine durable (Redis: appendonly yes, appendfsync always) ' +
        'and set the counter above the highest id ever issued before generating again.',
    );
    this.counter = counter;
    this.highest = highest;
    this.received = received;
  }
}

/**
 * A snowflake generator would need a time unit further ahead of its clock than it may borrow, and
 * waiting did not help (or its policy is `'throw'`). Nothing was issued; no id is ever repeated.
 * `source` says what was ahead: `clock`, the generator's own last id (its monotonic clock went
 * backwards, or ids were asked for faster than the layout allows for longer than `maxBorrowMs`);
 * `mark`, the high-water mark of a recycled worker slot (the previous holder's clock was ahead of
 * ours, or ours was stepped back).
 */
export class ClockBackwardsError extends DlockError {
  /** How far the clock is behind the time the next id needs, in ms. */
  readonly behindMs: number;
  /** How long the generator waited before giving up, in ms. */
  readonly waitedMs: number;
  /** `clock`: the clock read behind the last id; `mark`: the durable high-water mark is ahead of it. */
  readonly source: 'clock' | 'mark';
  constructor(source: 'clock' | 'mark', behindMs: number, waitedMs: number, detail: string) {
    super('DLOCK_CLOCK_BACKWARDS', detail);
    this.source = source;
    this.behindMs = behindMs;
    this.waitedMs = waitedMs;
  }
}

/**
 * The worker id of an id generator is no longer leased (the lease expired, was taken, or the
 * generator was closed): the generator stopped issuing, so the slot's next holder cannot duplicate
 * its ids. Start a new generator. `cause` is the lease's {@link LockLostError} when there is one.
 */
export class WorkerLeaseLostError extends DlockError {
  /** The generator name. */
  readonly generator: string;
  /** The worker id whose lease was lost. */
  readonly workerId: number;
  constructor(generator: string, workerId: number, why: string, options?: { cause?: unknown }) {
    super(
      'DLOCK_WORKER_LEASE_LOST',
      `Id generator "${generator}" lost the lease on worker id ${workerId} (${why}); it issues no more ids, so that ` +
        'the next holder of that worker id cannot duplicate them. Start a new generator (it claims a free worker id).',
      options,
    );
    this.generator = generator;
    this.workerId = workerId;
  }
}

/**
 * An id generator reached the time its worker slot's high-water mark covers, because the engine
 * has not accepted a newer mark (slow or unreachable). Ids resume as soon as a mark write succeeds.
 */
export class WorkerMarkStalledError extends DlockError {
  /** The generator name. */
  readonly generator: string;
  /** The worker id of the generator. */
  readonly workerId: number;
  /** The time the last accepted mark covers, in ms since 1970. */
  readonly coveredUntilMs: number;
  constructor(generator: string, workerId: number, coveredUntilMs: number, options?: { cause?: unknown }) {
    super(
      'DLOCK_WORKER_MARK_STALLED',
      `Id generator "${generator}" (worker id ${workerId}) reached ${new Date(coveredUntilMs).toISOString()}, the time its ` +
        "worker slot's high-water mark covers: the engine has not accepted a newer mark (slow or unreachable). " +
        'Ids resume as soon as a mark write succeeds; check that the engine is reachable.',
      options,
    );
    this.generator = generator;
    this.workerId = workerId;
    this.coveredUntilMs = coveredUntilMs;
  }
}

/** Every worker id an id generator may use is leased by a live generator. */
export class NoFreeWorkerError extends DlockError {
  /** The generator name. */
  readonly generator: string;
  /** How many worker ids were tried. */
  readonly tried: number;
  constructor(generator: string, tried: number, waitedMs: number) {
    super(
      'DLOCK_NO_FREE_WORKER',
      `No free worker id for id generator "${generator}": ${tried === 1 ? 'the worker id is' : `all ${tried} worker ids are`} ` +
        `leased by live generators (waited ${waitedMs} ms). Close unused generators, wait longer (waitMs), ` +
        'or use a layout with more workerBits.',
    );
    this.generator = generator;
    this.tried = tried;
  }
}

/**
 * A driver needs an engine's client that is not installed (each is an optional peer dependency
 * of dlock): `packageName` is the package, `installCommand` the command that installs it.
 */
export class MissingPeerError extends DlockError {
  /** The npm package to install, e.g. `etcd3`. */
  readonly packageName: string;
  /** The driver (e.g. `etcd`) or the part of dlock (e.g. `dlock/otel`) that needs it. */
  readonly engine: string;
  /** The command that fixes it, e.g. `npm install etcd3`. */
  readonly installCommand: string;
  constructor(packageName: string, engine: string, options?: { cause?: unknown }) {
    const installCommand = `npm install ${packageName}`;
    super(
      'DLOCK_MISSING_PEER',
      `${/^[a-z0-9]+$/i.test(engine) ? `The ${engine} driver` : engine} needs the "${packageName}" package, which is not installed: run \`${installCommand}\` ` +
        '(each engine client, and @opentelemetry/api, is an optional peer dependency of dlock: install the ones you use).',
      options,
    );
    this.packageName = packageName;
    this.engine = engine;
    this.installCommand = installCommand;
  }
}

/**
 * An engine client's native module was built for another Node.js (after switching Node versions,
 * or copying node_modules between machines): `fixCommand` rebuilds it for the Node that runs now.
 */
export class NativeModuleError extends DlockError {
  /** The package whose native module does not load, e.g. `better-sqlite3`. */
  readonly packageName: string;
  /** The Node.js running now, e.g. `v22.11.0`. */
  readonly nodeVersion: string;
  /** The ABI (NODE_MODULE_VERSION) of this Node, e.g. `127`. */
  readonly nodeAbi: number;
  /** The ABI the module was built for, when Node's message says. */
  readonly builtForAbi: number | undefined;
  /** The command that fixes it, e.g. `npm rebuild better-sqlite3`. */
  readonly fixCommand: string;
  constructor(packageName: string, builtForAbi: number | undefined, options?: { cause?: unknown }) {
    const fixCommand = `npm rebuild ${packageName}`;
    const nodeAbi = Number(process.versions.modules);
    const builtFor = builtForAbi === undefined ? 'another Node.js' : `another Node.js (NODE_MODULE_VERSION ${builtForAbi})`;
    super(
      'DLOCK_NATIVE_MODULE',
      `The native module of "${packageName}" was built for ${builtFor}, not for the Node.js running now ` +
        `(${process.version}, NODE_MODULE_VERSION ${nodeAbi}): run \`${fixCommand}\` with this Node ` +
        '(or reinstall the dependencies with it).',
      options,
    );
    this.packageName = packageName;
    this.nodeVersion = process.version;
    this.nodeAbi = nodeAbi;
    this.builtForAbi = builtForAbi;
    this.fixCommand = fixCommand;
  }
}

/**
 * Asked to create nothing (`connect(url, { create: false })`, as `dlock inspect` and `dlock ls`
 * do), and the engine lacks what the URL names (a SQLite file, a database): usually a typo in the URL.
 */
export class NoSuchDatabaseError extends DlockError {
  /** The URL (or path) that names nothing. */
  readonly url: string;
  constructor(url: string, message: string) {
    super('DLOCK_NOT_FOUND', message);
    this.url = url;
  }
}

/** True for any error thrown by dlock (they all carry a `code` starting with `DLOCK_`). */
export function isDlockError(e: unknown): e is {
  /** The error's stable code. */
  code: DlockErrorCode;
} & Error {
  const code = e instanceof Error ? (e as unknown as { code?: unknown }).code : undefined;
  return typeof code === 'string' && code.startsWith('DLOCK_');
}

/**
 * The engine refused an operator step for lack of a privilege (a force-release that must end
 * another connection: MySQL `KILL` needs `CONNECTION_ADMIN` or `SUPER`, PostgreSQL's
 * `pg_terminate_backend` needs the holder's role or `pg_signal_backend`). The message names the
 * privilege to grant.
 */
export class PermissionDeniedError extends DlockError {
  /** The driver's name. */
  readonly engine: string;
  constructor(engine: string, what: string, grant: string, options?: { cause?: unknown }) {
    super('DLOCK_PERMISSION_DENIED', `The ${engine} server refused ${what}: ${grant}.`, options);
    this.engine = engine;
  }
}
