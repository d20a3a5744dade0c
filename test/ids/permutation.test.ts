import { createHmac, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, OutOfRangeError } from '../../src/errors.js';
import { MAX_ID } from '../../src/ids/layout.js';
import { HmacSha256, IdPermutation } from '../../src/ids/permutation.js';

const KEY = 'dlock test key, 32 bytes long!!!';

describe('HmacSha256 (plain JS)', () => {
  it('property: equals node:crypto HMAC-SHA256 for keys of any length and messages up to 55 bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 150 }), fc.uint8Array({ minLength: 0, maxLength: 55 }), (key, msg) => {
        const mine = Buffer.from(new HmacSha256(key).mac(msg)).toString('hex');
        expect(mine).toBe(createHmac('sha256', key).update(msg).digest('hex'));
      }),
      { numRuns: 500 },
    );
  });

  it('word() is the first 32 bits of the MAC of "dlkp" | version | round | x', () => {
    const key = randomBytes(32);
    const h = new HmacSha256(key);
    for (const [round, x] of [[0, 0], [3, 0xdeadbeef], [9, 0x7fffffff], [255, 1]] as const) {
      const msg = Buffer.alloc(10);
      msg.write('dlkp', 0, 'latin1');
      msg[4] = 1;
      msg[5] = round;
      msg.writeUInt32BE(x, 6);
      expect(h.word(round, x)).toBe(createHmac('sha256', key).update(msg).digest().readUInt32BE(0));
    }
  });
});

describe('IdPermutation', () => {
  const p = new IdPermutation(KEY);

  it('is stable: the same key gives the same public ids in every release (changing them breaks every stored one)', () => {
    expect([0n, 1n, 2n, 123456789n, MAX_ID].map((x) => p.encode(x).toString())).toEqual(STABLE);
    expect(new IdPermutation(Buffer.from(KEY)).encode(42n)).toBe(p.encode(42n));
  });

  it('property: decode(encode(id)) = id and encode stays within [0, 2^63): a bijection of the id space', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: MAX_ID }), (id) => {
        const pub = p.encode(id);
        expect(pub >= 0n && pub <= MAX_ID).toBe(true);
        expect(p.decode(pub)).toBe(id);
        expect(p.encode(p.decode(id))).toBe(id);
      }),
      { numRuns: 3000 },
    );
    for (const edge of [0n, 1n, 0xffffffffn, 0x100000000n, MAX_ID - 1n, MAX_ID]) expect(p.decode(p.encode(edge))).toBe(edge);
  });

  it('maps 100,000 consecutive ids to 100,000 distinct public ids that reveal neither order nor volume', () => {
    const base = 117814679122432000n;
    const seen = new Set<bigint>();
    let increases = 0;
    let prev = -1n;
    for (let i = 0n; i < 100_000n; i++) {
      const pub = p.encode(base + i);
      seen.add(pub);
      if (pub > prev) increases++;
      prev = pub;
    }
    expect(seen.size).toBe(100_000);
    // Random order: about half of the neighbours go up.
    expect(increases / 100_000).toBeGreaterThan(0.48);
    expect(increases / 100_000).toBeLessThan(0.52);
    // And the public ids of neighbours are far apart.
    expect(p.encode(base + 1n) - p.encode(base) > 1_000_000n || p.encode(base) - p.encode(base + 1n) > 1_000_000n).toBe(true);
  });

  it('depends on the key', () => {
    const other = new IdPermutation(`${KEY}?`);
    let same = 0;
    for (let i = 0n; i < 1000n; i++) if (other.encode(i) === p.encode(i)) same++;
    expect(same).toBe(0);
  });

  it('refuses short keys and bad input', () => {
    expect(() => new IdPermutation('fifteen bytes!!')).toThrow(OutOfRangeError);
    expect(() => new IdPermutation(new Uint8Array(8))).toThrow(/at least 16 bytes/);
    expect(() => new IdPermutation(new Uint8Array(8))).toThrow(expect.objectContaining({ code: 'DLOCK_OUT_OF_RANGE', option: 'key' }));
    expect(() => new IdPermutation(42 as unknown as string)).toThrow(InvalidArgumentError);
    expect(() => p.encode(-1n)).toThrow(OutOfRangeError);
    expect(() => p.decode(MAX_ID + 1n)).toThrow(OutOfRangeError);
    expect(p.decode(p.encode('12345').toString())).toBe(12345n);
  });
});

/** encode() of 0, 1, 2, 123456789 and 2^63-1 under KEY (10 rounds, version 1). */
const STABLE = ['1105176789899891856', '2480032528976529781', '7971329159065341546', '703330422015639406', '1327095738492089137'];
