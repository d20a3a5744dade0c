/**
 * dlock: distributed locks and ids for Node.js on real engines.
 * @packageDocumentation
 */
export * from './errors.js';
export { LockClient, type LockClientOptions, type AcquireOptions, type LockInfo, type KeyInfo } from './core/client.js';
export { admits, BARGE_BOUND_MS, MAX_LIMIT, type Claim, type Ask } from './core/admission.js';
export { Lease } from './core/lease.js';
export type { Logger } from './core/renewal.js';
export { parseOwner, type OwnerInfo } from './core/owner.js';
export { LockEvents, type LockEventMap, type LockEventName, type LockEventListener, type LockEventBase, type WaitOutcome } from './core/events.js';
export { EngineSession, type SessionHooks, type SessionEnd } from './core/session.js';
export { monotonicNow } from './core/clock.js';
export type * from './drivers/driver.js';
export { isSessionDriver, SessionListeners } from './drivers/driver.js';
export type * from './drivers/id-store.js';
export { markStoreOf, rangeStoreOf } from './drivers/id-store.js';
export { MemoryDriver } from './drivers/memory/index.js';
export { connect, createDriver, SUPPORTED_SCHEMES, type ConnectOptions, type CreateDriverOptions } from './connect.js';
export { doctor, type DoctorReport, type DoctorFinding, type DoctorOptions, type DoctorStatus } from './doctor/index.js';
export * from './ids/index.js';
export { MultiLock, MultiLease } from './primitives/multi-lock.js';
export { LeaderElection, type LeaderElectionOptions, type CampaignOptions } from './primitives/election.js';
export { Semaphore, MAX_PERMITS, type SemaphoreOptions, type PermitOptions } from './primitives/semaphore.js';
export { ReadWriteLock, LockSide } from './primitives/read-write-lock.js';
