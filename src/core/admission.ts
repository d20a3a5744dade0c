/**
 * The admission rule, once, for every primitive and every engine (see `Admission` in
 * src/drivers/driver.ts). Curator's model: mutex, read-write lock and semaphore are one algorithm
 * with different admission rules. A request is admitted over the claims ahead of it: the holders,
 * and in fair mode also the waiters queued before it (on a queue engine the two are one sorted
 * list: the holders are its first entries).
 *
 * - `exclusive`: nothing ahead;
 * - `shared`: no exclusive claim ahead (so a queued writer stops new readers: no writer
 *   starvation under a stream of readers);
 * - `permits` (k of a limit L): no exclusive claim ahead, and the permits ahead plus k fit in L;
 * - `alongside` (the write holder taking the read side): admitted while that owner is ahead.
 *
 * Engines apply the same rule in their own atomic step (a Lua script, a SQL transaction); this
 * module is the reference they are tested against and what the core applies to a queue read.
 */
import type { Admission, AdmissionMode } from '../drivers/driver.js';
import { InvalidArgumentError, OutOfRangeError } from '../errors.js';

/**
 * How long the head of a key's queue may wait while others barge (requests without `fair`), in
 * ms; past it, a free key goes to the head. Go's sync.Mutex switches to handoff after 1 ms in one
 * process; an engine round trip is 0.1 to 2 ms, so 5 ms lets a releaser re-take its key a few
 * times in a row (what makes barging fast) while no waiter waits past 5 ms plus a handoff.
 * Every engine that offers the choice (`DriverInfo.fairness` `choice`) uses this bound.
 */
export const BARGE_BOUND_MS = 5;

/** Largest semaphore limit: permits are counted exactly as doubles (and as int64 on engines). */
export const MAX_LIMIT = 2 ** 40;

/** One holder or queued waiter, as the rule sees it. */
export interface Claim {
  /** The claim's owner id. */
  readonly owner: string;
  /** Its admission; absent: exclusive. */
  readonly admission?: Admission | undefined;
}

/** What is asked: an admission, and maybe the exclusive hold it may sit beside. */
export interface Ask {
  /** The request's admission; absent: exclusive. */
  readonly admission?: Admission | undefined;
  /** See `AcquireRequest.alongside`. */
  readonly alongside?: string | undefined;
}

/** The mode of an admission (absent: exclusive). */
export function modeOf(a: Admission | undefined): AdmissionMode {
  return a?.mode ?? 'exclusive';
}

/** Permits a claim counts against a semaphore's limit (0 for shared and exclusive claims). */
export function permitsOf(a: Admission | undefined): number {
  return a?.mode === 'permits' ? a.permits : 0;
}

/** Whether a request may share its key with others (shared, permits, or beside its own write hold). */
export function sharesKey(ask: Ask): boolean {
  return (ask.admission !== undefined && ask.admission.mode !== 'exclusive') || ask.alongside !== undefined;
}

/**
 * Whether a queue engine's read admits `ask` now: nothing ahead, or (a request that shares its
 * key) the rule over the entries ahead.
 */
export function viewAdmits(ask: Ask, view: { readonly ahead: number; readonly before?: readonly Claim[] | undefined }): boolean {
  if (view.ahead === 0) return true;
  return sharesKey(ask) && view.before !== undefined && admits(ask, view.before);
}

/**
 * Which entries of a queue hold the key: each entry, in order, is a holder when the rule admits
 * it over the entries before it (strict FIFO). The others wait.
 */
export function holdersOf<C extends Claim & { readonly alongside?: string | undefined }>(queue: readonly C[]): { holders: C[]; waiting: C[] } {
  const holders: C[] = [];
  const waiting: C[] = [];
  for (let i = 0; i < queue.length; i++) {
    const c = queue[i]!;
    if (waiting.length === 0 && admits(c, queue.slice(0, i))) holders.push(c);
    else waiting.push(c);
  }
  return { holders, waiting };
}

/** Whether `ask` is admitted over `ahead` (holders, then in fair mode the earlier waiters). */
export function admits(ask: Ask, ahead: readonly Claim[]): boolean {
  if (ask.alongside !== undefined && ahead.some((c) => c.owner === ask.alongside && modeOf(c.admission) === 'exclusive')) return true;
  const mode = modeOf(ask.admission);
  if (mode === 'exclusive') return ahead.length === 0;
  let used = 0;
  for (const c of ahead) {
    const m = modeOf(c.admission);
    if (m === 'exclusive') return false;
    used += permitsOf(c.admission);
  }
  if (ask.admission?.mode !== 'permits') return true;
  return used + ask.admission.permits <= ask.admission.limit;
}

/**
 * The claim ahead whose end may admit `ask` (what a queue waiter watches), or undefined when the
 * rule admits it now. Exclusive: the entry just ahead. Shared: the last exclusive claim ahead
 * (when it goes, the shared claims after it do not stop us). Permits: the oldest claim ahead, the
 * one that has held longest (any claim that goes may admit us; waiting on the oldest keeps the
 * wait to one watch, and a later look counts again).
 */
export function blockerOf<C extends Claim>(ask: Ask, ahead: readonly C[]): C | undefined {
  if (admits(ask, ahead)) return undefined;
  const mode = modeOf(ask.admission);
  if (mode === 'exclusive') return ahead[ahead.length - 1];
  if (mode === 'shared') {
    for (let i = ahead.length - 1; i >= 0; i--) if (modeOf(ahead[i]!.admission) === 'exclusive') return ahead[i];
    return undefined;
  }
  return ahead[0];
}

/** Check a semaphore's permits request against its limit (InvalidArgumentError / OutOfRangeError). */
export function validatePermits(permits: unknown, limit: number): number {
  if (permits === undefined) return 1;
  if (typeof permits !== 'number' || !Number.isInteger(permits)) {
    throw new InvalidArgumentError(`permits must be a whole number from 1 to the semaphore's ${limit}, got ${JSON.stringify(permits)}.`);
  }
  if (permits < 1 || permits > limit) {
    throw new OutOfRangeError('permits', `permits must be from 1 to the semaphore's ${limit} (all or nothing), got ${permits}.`);
  }
  return permits;
}

/** Check a semaphore's limit (a whole number from 1 to {@link MAX_LIMIT}). */
export function validateLimit(limit: unknown): number {
  if (typeof limit !== 'number' || !Number.isInteger(limit)) {
    throw new InvalidArgumentError(`Semaphore permits must be a whole number such as { permits: 4 }, got ${String(limit)}.`);
  }
  if (limit < 1 || limit > MAX_LIMIT) throw new OutOfRangeError('permits', `Semaphore permits must be from 1 to ${MAX_LIMIT}, got ${limit}.`);
  return limit;
}
