import { lazyPeer } from '../../core/peer.js';

/** The `ioredis` module, loaded when dlock opens its own connections (MissingPeerError when absent). */
export const ioredis = lazyPeer<typeof import('ioredis')>('ioredis');

/** {@link ioredis} for async code paths: a missing package becomes a rejection. */
export const importIoredis = (): Promise<typeof import('ioredis')> => Promise.resolve().then(ioredis);
