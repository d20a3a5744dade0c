/** The conformance suite's types: what a driver supplies, and what every test file of the suite shares. */
import type { LockClient, LockClientOptions } from '../../../src/core/client.js';
import type { LockDriver } from '../../../src/drivers/driver.js';

/** A private engine that a test may make unavailable. */
export interface IsolatedEngine {
  /** A new driver on this private engine. */
  create(): Promise<LockDriver>;
  /** Make every engine operation fail or hang (stop the server, lock the database...). */
  makeUnavailable(): Promise<void>;
  /** Undo {@link makeUnavailable}. */
  restore(): Promise<void>;
  /** Free everything (servers, files, helper processes). */
  dispose(): Promise<void>;
  /**
   * How many lock operations the engine has executed so far (redis: EVAL/EVALSHA calls), when
   * the engine can tell; lets a test prove that a waiter does not poll.
   */
  operations?(): Promise<number>;
}

/** What a driver supplies to run the suite. */
export interface ConformanceFactory {
  name: string;
  /** A new driver instance (own connections) on the same engine, for clients in this process. */
  create(): Promise<LockDriver>;
  /**
   * URL that forked workers pass to connect(); undefined for process-local drivers (memory):
   * cross-process tests are then not defined for it.
   */
  url?: () => string;
  /**
   * URL a standalone child may connect to on its own, for the close()/open-handles check.
   * Defaults to {@link url}; process-local drivers can still give one (`memory:`).
   */
  standaloneUrl?: () => string;
  /** Remove a key behind the holder's back with a real engine operation (redis DEL / SQL DELETE / memory forget). */
  removeBehindBack(key: string): Promise<void>;
  /** A private engine instance that can be made unavailable. */
  isolated?(): Promise<IsolatedEngine>;
  /**
   * The engine frees a dead holder's lock as soon as it sees the holder's connection close (SQL
   * session locks: PostgreSQL advisory locks, MySQL GET_LOCK), not when a TTL runs out.
   */
  freesOnDisconnect?: boolean;
  /**
   * Counters of wait machinery left for `key` (memory: keys with open watches; redis: channel
   * subscribers...). Every counter must be 0 once no wait is in progress.
   */
  waitResidue?(key: string): Promise<Record<string, number>>;
}

/** What `defineConformanceSuite`'s describe block gives each file of the suite. */
export interface SuiteContext {
  /** The driver under test. */
  readonly factory: ConformanceFactory;
  /** A client on a new driver instance (own connections); closed after each test. */
  readonly newClient: (opts?: LockClientOptions) => Promise<LockClient>;
  /** A new raw driver instance; closed after each test. */
  readonly newDriver: () => Promise<LockDriver>;
  /** Wait machinery may linger briefly (e.g. a cached subscription), but must go away: fails when it stays. */
  readonly expectNoWaitResidue: (key: string) => Promise<void>;
  /** A key no other test (or run) uses: `conf:<driver>:<name>:<random>`. */
  readonly uniqueKey: (name: string) => string;
}
