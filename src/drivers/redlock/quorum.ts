/**
 * Vote counting for the Redlock driver, kept apart from Redis so it can be unit-tested with
 * plain promises: one request to every node at once, settled as soon as the answers so far
 * decide the outcome (a majority for, or enough against that a majority is out of reach), or at
 * a deadline. Answers that arrive after the round settled are handed to `late` (a grant that
 * came too late must still be released).
 */
import { monotonicNow } from '../../core/clock.js';
import type { NodeAnswer } from '../../errors.js';

/** Nodes that must agree among `n`: floor(n/2) + 1. */
export function quorumOf(n: number): number {
  return Math.floor(n / 2) + 1;
}

/** What one node did with a request of a round. */
export type Reply<T> =
  | { readonly ok: true; readonly value: T }
  | {
      readonly ok: false;
      /** `unreachable`: no connection or no answer in time; `error`: the node answered with an error. */
      readonly kind: 'unreachable' | 'error';
      readonly detail: string;
    };

/** The answers of a round so far, by node index; `undefined` while a node has not answered. */
export type Replies<T> = ReadonlyArray<Reply<T> | undefined>;

export interface RoundSpec<T, R> {
  /** Number of nodes. */
  readonly n: number;
  /** Send the request to node `i`. */
  send(i: number): Promise<T>;
  /**
   * Called after every answer (and once with `final` at the deadline): return the outcome once
   * the answers decide it, `undefined` to keep waiting. With `final` it must return an outcome.
   */
  decide(replies: Replies<T>, final: boolean): R | undefined;
  /** Deadline of the round, in ms from now. */
  readonly timeoutMs: number;
  /** A reply that arrived after the round settled (never called for replies before it). */
  late?(i: number, reply: Reply<T>, outcome: R): void;
}

export interface RoundResult<T, R> {
  readonly outcome: R;
  /** A snapshot of the replies when the round settled (pending nodes are `undefined`). */
  readonly replies: Replies<T>;
  /**
   * Every reply, once all nodes answered or the round's deadline passed (for an error report that
   * says what each node answered rather than "no answer yet"); the outcome does not change.
   */
  readonly complete: () => Promise<Replies<T>>;
}

/** Redis reply errors (ioredis `ReplyError`, node-redis `ErrorReply`) come from a node that answered. */
export function classify(error: unknown): Reply<never> {
  const names = error instanceof Error ? [error.name, error.constructor.name] : [];
  const detail = error instanceof Error ? error.message : String(error);
  const answered = names.includes('ReplyError') || names.includes('ErrorReply') || detail.startsWith('dlock:');
  return { ok: false, kind: answered ? 'error' : 'unreachable', detail };
}

/** Run one round; never rejects (a failing `send` is a reply of kind unreachable/error). */
export function round<T, R>(spec: RoundSpec<T, R>): Promise<RoundResult<T, R>> {
  const deadline = monotonicNow() + Math.max(0, spec.timeoutMs);
  /** Every reply, also those after the outcome (for complete()). */
  const all: Array<Reply<T> | undefined> = new Array<Reply<T> | undefined>(spec.n).fill(undefined);
  let answered = 0;
  const onComplete: Array<() => void> = [];
  const complete = (): Promise<Replies<T>> => {
    if (answered === spec.n || monotonicNow() >= deadline) return Promise.resolve([...all]);
    return new Promise((resolve) => {
      const timer = setTimeout(done, deadline - monotonicNow());
      function done(): void {
        clearTimeout(timer);
        resolve([...all]);
      }
      onComplete.push(done);
    });
  };
  return new Promise((resolve) => {
    const replies: Array<Reply<T> | undefined> = new Array<Reply<T> | undefined>(spec.n).fill(undefined);
    let outcome: { value: R } | undefined;
    let timer: NodeJS.Timeout | undefined;
    const settle = (value: R): void => {
      outcome = { value };
      if (timer) clearTimeout(timer);
      resolve({ outcome: value, replies: [...replies], complete });
    };
    const answer = (i: number, reply: Reply<T>): void => {
      all[i] = reply;
      answered++;
      if (answered === spec.n) for (const f of onComplete.splice(0)) f();
      if (outcome) {
        spec.late?.(i, reply, outcome.value);
        return;
      }
      replies[i] = reply;
      const decided = spec.decide(replies, false);
      if (decided !== undefined) settle(decided);
      else if (answered === spec.n) settle(spec.decide(replies, true) as R);
    };
    for (let i = 0; i < spec.n; i++) {
      let sent: Promise<T>;
      try {
        sent = spec.send(i);
      } catch (e) {
        sent = Promise.reject(e instanceof Error ? e : new Error(String(e)));
      }
      sent.then(
        (value) => answer(i, { ok: true, value }),
        (e: unknown) => answer(i, classify(e)),
      );
    }
    if (!outcome) {
      timer = setTimeout(() => {
        if (!outcome) settle(spec.decide(replies, true) as R);
      }, Math.max(0, spec.timeoutMs));
    }
  });
}

/** Count the replies that satisfy `pred`. */
export function count<T>(replies: Replies<T>, pred: (value: T) => boolean): number {
  let c = 0;
  for (const r of replies) if (r?.ok && pred(r.value)) c++;
  return c;
}

/** Replies that are errors (unreachable or error answers). */
export function failures<T>(replies: Replies<T>): number {
  let c = 0;
  for (const r of replies) if (r && !r.ok) c++;
  return c;
}

/**
 * How long until a majority of nodes could be free, from the remaining TTLs the nodes reported:
 * `free` nodes count 0, held ones their TTL, nodes without an answer (or a key without expiry)
 * count as unknown. It is the (n - quorum + 1)-th longest remaining TTL; -1 when unknown.
 */
export function majorityFreeInMs(remaining: ReadonlyArray<number | undefined>, quorum: number): number {
  const sorted = remaining.map((r) => (r === undefined || r < 0 ? Number.POSITIVE_INFINITY : r)).sort((a, b) => b - a);
  const v = sorted[remaining.length - quorum] ?? Number.POSITIVE_INFINITY;
  return Number.isFinite(v) ? Math.ceil(v) : -1;
}

/** A reply turned into what a {@link QuorumError} lists; `pending` nodes had not answered when the round settled. */
export function describe<T>(
  labels: readonly string[],
  replies: Replies<T>,
  ok: (value: T) => Pick<NodeAnswer, 'answer' | 'detail'>,
  pending: string,
): NodeAnswer[] {
  return labels.map((node, i) => {
    const r = replies[i];
    if (r === undefined) return { node, answer: 'unreachable', detail: pending };
    if (!r.ok) return { node, answer: r.kind, detail: r.detail };
    return { node, ...ok(r.value) };
  });
}
