/**
 * A keyed permutation of [0, 2^63): turn internal ids into public ones that do not reveal volume
 * or order, and back.
 *
 * Consecutive snowflake ids differ by 1 and carry their creation time: anyone who sees two of
 * them learns how many ids were issued in between, and when. `encode(id)` maps every id in
 * [0, 2^63) to a different id in the same range (so it still fits a positive int64 column and the
 * same JSON handling) that looks random without the key; `decode(pub)` inverts it.
 *
 * Construction: an alternating (unbalanced) Feistel network over the 63 bits split 31/32, as
 * NIST FF1 does for odd lengths, with 10 rounds; round i XORs one half with the first 32 bits of
 * HMAC-SHA256(key, "dlkp" | version | i | other half). Splitting 31/32 keeps every intermediate
 * value below 2^63, so no cycle-walking is needed (a 64-bit Feistel would need on average two
 * passes to land below 2^63, and a variable number of them). HMAC-SHA256 is computed here in
 * plain JavaScript from the key's precomputed inner/outer states (two SHA-256 compressions per
 * round, checked against node:crypto in the tests): node:crypto's per-call object overhead
 * (~5 µs per HMAC) would make one encode cost ~50 µs; this way it costs a few µs.
 *
 * What it is not: authorization or encryption of anything secret. It hides volume and order from
 * people who do not hold the key; anyone may still send you any 63-bit number, so check access
 * as you would for a plain id. Rotating the key changes every public id. Use one key per id kind
 * (or per table) so public ids of different kinds cannot be correlated.
 */
import { createHash } from 'node:crypto';
import { InvalidArgumentError, OutOfRangeError } from '../errors.js';
import { parseId } from './layout.js';

/** Minimum key length in bytes. */
export const MIN_PERMUTATION_KEY_BYTES = 16;
const ROUNDS = 10;
const VERSION = 1;

// SHA-256 round constants (FIPS 180-4).
const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
  0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
  0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
  0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
  0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const IV = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);

/** One SHA-256 compression: `state` (8 words) absorbs the 16-word block `w[0..15]`; `w` is scratch (64 words). */
function compress(state: Int32Array, w: Int32Array): void {
  for (let i = 16; i < 64; i++) {
    const x = w[i - 15]!;
    const y = w[i - 2]!;
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    w[i] = (w[i - 16]! + s0 + w[i - 7]! + s1) | 0;
  }
  let a = state[0]!;
  let b = state[1]!;
  let c = state[2]!;
  let d = state[3]!;
  let e = state[4]!;
  let f = state[5]!;
  let g = state[6]!;
  let h = state[7]!;
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[i]! + w[i]!) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  state[0] = (state[0]! + a) | 0;
  state[1] = (state[1]! + b) | 0;
  state[2] = (state[2]! + c) | 0;
  state[3] = (state[3]! + d) | 0;
  state[4] = (state[4]! + e) | 0;
  state[5] = (state[5]! + f) | 0;
  state[6] = (state[6]! + g) | 0;
  state[7] = (state[7]! + h) | 0;
}

/**
 * HMAC-SHA256 of short messages (at most 55 bytes) under one key, in plain JS. The key's inner and
 * outer pad blocks are compressed once; each MAC then costs two compressions.
 * @internal exported for the tests, which check it against node:crypto.
 */
export class HmacSha256 {
  private readonly inner = new Int32Array(8);
  private readonly outer = new Int32Array(8);
  private readonly state = new Int32Array(8);
  private readonly w = new Int32Array(64);

  constructor(key: Uint8Array) {
    const k = new Uint8Array(64);
    k.set(key.length > 64 ? createHash('sha256').update(key).digest() : key);
    for (const [pad, st] of [[0x36, this.inner], [0x5c, this.outer]] as const) {
      st.set(IV);
      for (let i = 0; i < 16; i++) {
        this.w[i] = (((k[4 * i]! ^ pad) << 24) | ((k[4 * i + 1]! ^ pad) << 16) | ((k[4 * i + 2]! ^ pad) << 8) | (k[4 * i + 3]! ^ pad)) | 0;
      }
      compress(st, this.w);
    }
  }

  /** The full 32-byte MAC of `msg` (tests; at most 55 bytes). */
  mac(msg: Uint8Array): Uint8Array {
    if (msg.length > 55) throw new RangeError('HmacSha256 handles messages of at most 55 bytes.');
    const w = this.w;
    w.fill(0, 0, 16);
    for (let i = 0; i < msg.length; i++) w[i >> 2]! |= msg[i]! << (24 - 8 * (i & 3));
    w[msg.length >> 2]! |= 0x80 << (24 - 8 * (msg.length & 3));
    w[15] = (64 + msg.length) * 8;
    this.finish();
    const out = new Uint8Array(32);
    for (let i = 0; i < 8; i++) {
      const v = this.state[i]!;
      out[4 * i] = v >>> 24;
      out[4 * i + 1] = (v >>> 16) & 0xff;
      out[4 * i + 2] = (v >>> 8) & 0xff;
      out[4 * i + 3] = v & 0xff;
    }
    return out;
  }

  /** The first 32 bits of the MAC of the 10-byte message "dlkp" | version | round | x (big-endian). */
  word(round: number, x: number): number {
    const w = this.w;
    w[0] = 0x646c6b70; // "dlkp"
    w[1] = (VERSION << 24) | ((round & 0xff) << 16) | ((x >>> 24) << 8) | ((x >>> 16) & 0xff);
    w[2] = (((x >>> 8) & 0xff) << 24) | ((x & 0xff) << 16) | (0x80 << 8);
    w.fill(0, 3, 15);
    w[15] = (64 + 10) * 8;
    this.finish();
    return this.state[0]! >>> 0;
  }

  /** Inner hash of the block in `w`, then the outer hash of that; the result is left in `state`. */
  private finish(): void {
    const { w, state } = this;
    state.set(this.inner);
    compress(state, w);
    for (let i = 0; i < 8; i++) w[i] = state[i]!;
    w[8] = 0x80000000;
    w.fill(0, 9, 15);
    w[15] = (64 + 32) * 8;
    state.set(this.outer);
    compress(state, w);
  }
}

/** See the file header. */
export class IdPermutation {
  private readonly prf: HmacSha256;

  /**
   * @param key at least 16 bytes (a Buffer/Uint8Array, or a string taken as UTF-8); keep it secret
   *   and stable: another key gives other public ids.
   */
  constructor(key: Uint8Array | string) {
    let bytes: Uint8Array;
    if (typeof key === 'string') bytes = new TextEncoder().encode(key);
    else if (key instanceof Uint8Array) bytes = key;
    else throw new InvalidArgumentError('The permutation key must be a Uint8Array (Buffer) or a string.');
    if (bytes.length < MIN_PERMUTATION_KEY_BYTES) {
      throw new OutOfRangeError(
        'key',
        `The permutation key must be at least ${MIN_PERMUTATION_KEY_BYTES} bytes, got ${bytes.length}: use e.g. crypto.randomBytes(32), kept as a secret.`,
      );
    }
    this.prf = new HmacSha256(bytes);
  }

  /** The public id of `id` (both in [0, 2^63)). */
  encode(id: bigint | string): bigint {
    const v = parseId(id);
    let a = Number(v >> 32n);
    let b = Number(v & 0xffffffffn);
    for (let i = 0; i < ROUNDS; i++) {
      if ((i & 1) === 0) a = (a ^ this.prf.word(i, b)) & 0x7fffffff;
      else b = (b ^ this.prf.word(i, a)) >>> 0;
    }
    return (BigInt(a) << 32n) | BigInt(b);
  }

  /** The id whose public id is `pub`. */
  decode(pub: bigint | string): bigint {
    const v = parseId(pub);
    let a = Number(v >> 32n);
    let b = Number(v & 0xffffffffn);
    for (let i = ROUNDS - 1; i >= 0; i--) {
      if ((i & 1) === 0) a = (a ^ this.prf.word(i, b)) & 0x7fffffff;
      else b = (b ^ this.prf.word(i, a)) >>> 0;
    }
    return (BigInt(a) << 32n) | BigInt(b);
  }
}
