/**
 * Loading an engine's client (an optional peer dependency) when a driver needs it, so that a
 * missing package is reported as {@link MissingPeerError} (the package and the command to install
 * it) instead of a raw `ERR_MODULE_NOT_FOUND` at import time.
 */
import { MissingPeerError, NativeModuleError } from '../errors.js';
import { peerRequire } from './peer-require.js';

/** The optional peers dlock loads (engine clients, the OpenTelemetry API), and what needs each. */
export const PEERS = {
  'better-sqlite3': 'SQLite',
  ioredis: 'Redis',
  'node-zookeeper-client': 'ZooKeeper',
  etcd3: 'etcd',
  pg: 'PostgreSQL',
  mysql2: 'MySQL/MariaDB',
  '@opentelemetry/api': 'dlock/otel (OpenTelemetry metrics and traces)',
} as const;

/** The name of a package in {@link PEERS}. */
export type PeerName = keyof typeof PEERS;

const loaded = new Map<PeerName, unknown>();

/**
 * The module `name`, loaded once. Throws {@link MissingPeerError} when it is not installed, and
 * {@link NativeModuleError} when its native part was built for another Node.js.
 */
export function loadPeer<T>(name: PeerName): T {
  if (loaded.has(name)) return loaded.get(name) as T;
  let mod: unknown;
  try {
    mod = peerRequire(name);
  } catch (e) {
    throw peerLoadError(name, e);
  }
  loaded.set(name, mod);
  return mod as T;
}

/** A memoized {@link loadPeer}, for a driver module's value imports (enums, classes). */
export function lazyPeer<T>(name: PeerName): () => T {
  let mod: T | undefined;
  return () => (mod ??= loadPeer<T>(name));
}

/**
 * The typed error for a failure to load or start `name`: {@link MissingPeerError} when the
 * package itself is not found, {@link NativeModuleError} when its native module was built for
 * another Node.js, and `undefined` (meaning: not a packaging problem) otherwise.
 */
export function classifyPeerError(name: PeerName, e: unknown): MissingPeerError | NativeModuleError | undefined {
  if (e instanceof MissingPeerError || e instanceof NativeModuleError) return e;
  const err = e as { code?: unknown; message?: unknown } | null;
  const message = typeof err?.message === 'string' ? err.message : '';
  const code = typeof err?.code === 'string' ? err.code : '';
  if ((code === 'MODULE_NOT_FOUND' || code === 'ERR_MODULE_NOT_FOUND') && namesPackage(message, name)) {
    return new MissingPeerError(name, PEERS[name], { cause: e });
  }
  const abi = nativeMismatch(message);
  if (abi) return new NativeModuleError(name, abi.builtFor, { cause: e });
  return undefined;
}

function peerLoadError(name: PeerName, e: unknown): Error {
  return classifyPeerError(name, e) ?? (e instanceof Error ? e : new Error(String(e)));
}

/** "Cannot find module 'etcd3'" / "Cannot find package 'etcd3' imported from ...", not a file inside it. */
function namesPackage(message: string, name: string): boolean {
  return message.includes(`'${name}'`) || message.includes(`"${name}"`);
}

/**
 * Whether `message` is Node's report of a native module built for another ABI: "was compiled
 * against a different Node.js version using NODE_MODULE_VERSION 115. This version of Node.js
 * requires NODE_MODULE_VERSION 137" or "Module did not self-register" (the same cause, when the
 * module is loaded by a Node that cannot even read its version). `builtFor` is the ABI it was
 * built for, when the message says.
 */
export function nativeMismatch(message: string): { builtFor: number | undefined } | undefined {
  const m = /NODE_MODULE_VERSION (\d+)\. This version of Node\.js requires/.exec(message);
  if (m) return { builtFor: Number(m[1]) };
  if (message.includes('Module did not self-register')) return { builtFor: undefined };
  return undefined;
}
