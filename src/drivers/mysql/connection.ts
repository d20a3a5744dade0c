/**
 * One dedicated MySQL connection (mysql2's callback API, wrapped in promises), and the private set
 * of them a driver keeps.
 *
 * Why not a mysql2 Pool: session locks (GET_LOCK) belong to the connection that took them, so the
 * driver must know which connection holds what and must never let an unrelated query run on a
 * connection that is blocked in a server-side wait. A pool hands out whichever connection is idle.
 */
import { monotonicNow } from '../../core/clock.js';
import { lazyPeer } from '../../core/peer.js';
import type { Logger } from '../../core/renewal.js';

/** The mysql2 connection options the driver passes through (host, port, user, ssl...). */
export type ConnectionOptions = import('mysql2').ConnectionOptions;
type RawConnection = import('mysql2').Connection;

/** The `mysql2` module, loaded at the first driver construction (MissingPeerError when absent). */
export const mysql2 = lazyPeer<typeof import('mysql2')>('mysql2');

/** An error mysql2 reports for a query or a connection (the fields we read). */
export interface MysqlError extends Error {
  code?: string;
  errno?: number;
  fatal?: boolean;
}

/** A connection the driver owns. */
export class Conn {
  /** The server's CONNECTION_ID() for this connection. */
  readonly threadId: number;
  /** Monotonic send time of the last statement that got an answer: the session was alive then. */
  confirmedAt: number;
  /** False once the connection failed or was closed; it is never used again. */
  alive = true;
  /** The error that ended it, if any. */
  failure: MysqlError | undefined;
  /** Statements in flight (a blocked GET_LOCK counts). */
  inFlight = 0;
  private readonly closeListeners = new Set<(error: MysqlError | undefined) => void>();
  private readonly confirmListeners = new Set<(sentAt: number) => void>();
  private ended: Promise<void> | undefined;
  /** Set while {@link exclusive} runs: settles when it ends. */
  private owned: Promise<void> | undefined;

  constructor(
    private readonly raw: RawConnection,
    openedAt: number,
  ) {
    this.threadId = raw.threadId ?? -1;
    this.confirmedAt = openedAt;
    const onGone = (error?: MysqlError): void => this.gone(error);
    raw.on('error', (e: MysqlError) => onGone(e));
    raw.on('end', () => onGone());
  }

  /** Run `sql` (several statements allowed); resolves mysql2's result (an array for several). */
  query<T = unknown>(sql: string, params: readonly unknown[] = []): Promise<T> {
    // A transaction of several round trips owns the connection: later statements wait for it.
    if (this.owned) return this.owned.then(() => this.query<T>(sql, params));
    return this.send<T>(sql, params);
  }

  /**
   * Run `fn` with this connection to itself: statements that others send meanwhile wait until it
   * settles, so that none of them lands inside its transaction. When `fn` fails, `ROLLBACK` is
   * sent (an open transaction must never meet the next statement). `fn` sends with `send`.
   */
  async exclusive<T>(fn: (send: <R>(sql: string, params?: readonly unknown[]) => Promise<R>) => Promise<T>): Promise<T> {
    while (this.owned) await this.owned;
    let done!: () => void;
    this.owned = new Promise<void>((resolve) => (done = resolve));
    try {
      return await fn((sql, params) => this.send(sql, params));
    } catch (e) {
      if (this.alive) await this.send('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      this.owned = undefined;
      done();
    }
  }

  private send<T>(sql: string, params: readonly unknown[] = []): Promise<T> {
    if (!this.alive) return Promise.reject(this.failure ?? connectionClosed());
    const sentAt = monotonicNow();
    this.inFlight++;
    return new Promise<T>((resolve, reject) => {
      this.raw.query(sql, params as unknown[], (error, result) => {
        this.inFlight--;
        if (error) {
          const e = error as MysqlError;
          if (e.fatal) {
            // The connection is finished. mysql2 does not always say so with an event: a reset
            // (ECONNRESET, e.g. a server killed with this statement unread) that meets a
            // statement in flight goes to that statement's callback only, with no 'error' or
            // 'end', and then every later statement fails ("closed state"). Mark it gone here,
            // before the caller sees the error, so that it is replaced (and its session's locks
            // reported lost) instead of being reused forever.
            this.gone(e);
            this.raw.destroy();
          } else if (this.alive) {
            // A statement error (not the connection's) still proves the session was alive.
            this.confirm(sentAt);
          }
          reject(e);
          return;
        }
        if (this.alive) this.confirm(sentAt);
        resolve(result as T);
      });
    });
  }

  /** Called once when the connection ends (error, server close, KILL, or our own close). */
  onClose(listener: (error: MysqlError | undefined) => void): () => void {
    if (!this.alive) {
      queueMicrotask(() => listener(this.failure));
      return () => undefined;
    }
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  /** Called with the send time of every statement the server answered (the session was alive then). */
  onConfirm(listener: (sentAt: number) => void): () => void {
    this.confirmListeners.add(listener);
    return () => this.confirmListeners.delete(listener);
  }

  /** Quit politely (bounded), then make sure the socket is gone. Idempotent. */
  close(graceMs = 1000): Promise<void> {
    this.ended ??= new Promise<void>((resolve) => {
      const stream = (this.raw as unknown as { stream?: NodeJS.EventEmitter & { destroyed?: boolean } }).stream;
      const finish = (): void => {
        clearTimeout(timer);
        this.raw.destroy();
        if (!stream || stream.destroyed) resolve();
        else stream.once('close', () => resolve());
      };
      const timer = setTimeout(finish, graceMs);
      this.gone(undefined);
      if (this.inFlight > 0) {
        // A statement is still running (a blocked wait): do not wait for it.
        finish();
        return;
      }
      this.raw.end(() => finish());
    });
    return this.ended;
  }

  /** Drop the socket at once (the server sees a disconnect). */
  destroy(): void {
    this.gone(undefined);
    this.raw.destroy();
  }

  private confirm(sentAt: number): void {
    if (sentAt > this.confirmedAt) this.confirmedAt = sentAt;
    for (const l of this.confirmListeners) {
      try {
        l(sentAt);
      } catch {
        // a listener never breaks the connection
      }
    }
  }

  private gone(error: MysqlError | undefined): void {
    if (!this.alive) return;
    this.alive = false;
    this.failure = error ?? connectionClosed();
    for (const l of [...this.closeListeners]) {
      try {
        l(error);
      } catch {
        // a listener never breaks the others
      }
    }
    this.closeListeners.clear();
    this.confirmListeners.clear();
  }
}

function connectionClosed(): MysqlError {
  const e: MysqlError = new Error('The MySQL connection was closed.');
  e.code = 'PROTOCOL_CONNECTION_LOST';
  e.fatal = true;
  return e;
}

/** Open one connection; rejects (never throws an 'error' event) when the server is unreachable. */
export async function openConn(options: ConnectionOptions, logger: Logger | undefined): Promise<Conn> {
  const mysql = mysql2();
  const openedAt = monotonicNow();
  return new Promise<Conn>((resolve, reject) => {
    const raw = mysql.createConnection({
      ...options,
      // The driver's SQL relies on these: batches of statements in one round trip, and exact
      // 64-bit integers (tokens, marks, counters) as strings.
      multipleStatements: true,
      supportBigNumbers: true,
      bigNumberStrings: true,
    });
    let settled = false;
    raw.on('error', (e: MysqlError) => {
      if (!settled) {
        settled = true;
        raw.destroy();
        reject(e);
        return;
      }
      logger?.debug?.('dlock mysql: connection error', { error: e });
    });
    raw.connect((error) => {
      if (settled) return;
      settled = true;
      if (error) {
        raw.destroy();
        reject(error);
        return;
      }
      resolve(new Conn(raw, openedAt));
    });
  });
}
