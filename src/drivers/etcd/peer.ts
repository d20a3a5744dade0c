import { lazyPeer } from '../../core/peer.js';

/** The `etcd3` module, loaded at the first driver construction (MissingPeerError when absent). */
export const etcd3 = lazyPeer<typeof import('etcd3')>('etcd3');
