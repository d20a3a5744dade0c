/**
 * doctor() on real Redis servers started with good and bad settings: the verdicts follow the
 * settings, and doctor writes nothing (the keyspace stays empty).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { doctor } from '../../src/doctor/index.js';
import { startDelayProxy } from '../support/delay-proxy.js';
import { startRedis, withRedisClient, type RedisServer } from '../support/redis.js';
import { startRedlock, type RedlockNodes } from '../support/redlock.js';
import { repoRoot } from '../support/workers.js';
import { all, one } from './findings.js';

const servers: { stop(): Promise<void> }[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
});

async function redis(args: string[]): Promise<RedisServer> {
  const s = await startRedis({ args });
  servers.push(s);
  return s;
}

const keys = (port: number): Promise<number> => withRedisClient(port, async (c) => c.dbsize());

describe('doctor: Redis eviction policy', () => {
  it('allkeys-lru with a memory limit fails, and says noeviction', async () => {
    const s = await redis(['--maxmemory', '64mb', '--maxmemory-policy', 'allkeys-lru']);
    const r = await doctor(s.url, { pings: 10 });
    expect(r.engine).toBe('redis');
    const f = one(r, 'redis.maxmemory-policy');
    expect(f.status).toBe('fail');
    expect(f.evidence).toMatch(/allkeys-lru/);
    expect(f.fix).toMatch(/noeviction/);
    expect(await keys(s.port)).toBe(0);
  });

  it('volatile-ttl with a limit fails too (lock keys carry a TTL)', async () => {
    const s = await redis(['--maxmemory', '64mb', '--maxmemory-policy', 'volatile-ttl']);
    const f = one(await doctor(s.url, { pings: 10 }), 'redis.maxmemory-policy');
    expect(f.status).toBe('fail');
    expect(f.evidence).toMatch(/volatile-ttl.*carry a TTL/);
  });

  it('an evicting policy without a limit (maxmemory 0) warns', async () => {
    const s = await redis(['--maxmemory', '0', '--maxmemory-policy', 'allkeys-lru']);
    const f = one(await doctor(s.url, { pings: 10 }), 'redis.maxmemory-policy');
    expect(f.status).toBe('warn');
    expect(f.evidence).toMatch(/maxmemory 0/);
  });

  it('noeviction is ok; the clock, round trip and role are reported', async () => {
    const s = await redis(['--maxmemory', '64mb', '--maxmemory-policy', 'noeviction']);
    const r = await doctor(s.url, { pings: 20 });
    expect(one(r, 'redis.maxmemory-policy').status).toBe('ok');
    expect(one(r, 'redis.role').status).toBe('ok');
    expect(one(r, 'rtt').evidence).toMatch(/^20 PINGs to 127\.0\.0\.1:\d+: p50 [\d.]+ ms, p99 [\d.]+ ms/);
    // Same host, same clock: the measured offset is within its own uncertainty (+ the threshold).
    expect(one(r, 'clock').status).toBe('ok');
    expect(one(r, 'redis.persistence').status).toBe('warn'); // the test server runs appendonly no
    expect(r.findings.every((f) => f.status === 'ok' || f.fix !== undefined)).toBe(true);
  });

  it('a URL password is redacted in the report', async () => {
    const s = await redis([]);
    // Set after the start: the harness's readiness PING has no password.
    await withRedisClient(s.port, (c) => c.config('SET', 'requirepass', 'sekret'));
    const r = await doctor(`redis://:sekret@127.0.0.1:${s.port}`, { pings: 5 });
    expect(r.url).toBe(`redis://:***@127.0.0.1:${s.port}`);
    expect(JSON.stringify(r)).not.toContain('sekret');
  });
});

describe('doctor: clock offset', () => {
  it('this host 30 s ahead of the engine (libfaketime on the doctor process, wall clock only) warns, with the offset and NTP', async () => {
    const s = await redis([]);
    const env: NodeJS.ProcessEnv = { ...process.env, FAKETIME_DONT_FAKE_MONOTONIC: '1' };
    delete env.DLOCK_URL;
    const { stdout } = await promisify(execFile)('faketime', ['-f', '+30s', process.execPath, join(repoRoot, 'bin', 'dlock.js'), 'doctor', '--url', s.url, '--json'], { cwd: repoRoot, env, timeout: 60_000 });
    const report = JSON.parse(stdout) as { findings: Array<{ check: string; status: string; evidence: string; fix?: string }> };
    const clock = report.findings.find((f) => f.check === 'clock');
    expect(clock?.status).toBe('warn');
    const offset = /^the engine's clock is ([\d.]+) ms behind this host's/.exec(clock?.evidence ?? '');
    expect(offset, clock?.evidence).not.toBeNull();
    expect(Number(offset![1])).toBeGreaterThan(29_000);
    expect(Number(offset![1])).toBeLessThan(31_000);
    expect(clock?.fix).toMatch(/NTP/);
  });
});

describe('doctor: round trip', () => {
  it('a slow path (60 ms each way) warns; against a 1 s TTL it fails', async () => {
    const s = await redis([]);
    const proxy = await startDelayProxy(s.port, { delayMs: 60 });
    try {
      const slow = one(await doctor(proxy.url, { pings: 5 }), 'rtt');
      expect(slow.status).toBe('warn');
      expect(slow.evidence).toMatch(/above 100 ms/);
      const short = one(await doctor(proxy.url, { pings: 5, ttlMs: 1000 }), 'rtt');
      expect(short.status).toBe('fail');
      expect(short.fix).toMatch(/ttlMs/);
    } finally {
      await proxy.close();
    }
  });
});

describe('doctor: Redis replicas', () => {
  it('a connected replica without replicaAcks warns; with replicaAcks=1 it is ok; replicaAcks=2 fails; the replica itself fails', async () => {
    const master = await redis([]);
    const replica = await redis(['--replicaof', '127.0.0.1', String(master.port)]);
    for (let i = 0; i < 200; i++) {
      const info = await withRedisClient(master.port, (c) => c.info('replication'));
      if (/connected_slaves:1/.test(info)) break;
      await delay(50);
    }
    expect(one(await doctor(master.url, { pings: 5 }), 'redis.replicas').status).toBe('warn');
    expect(one(await doctor(`${master.url}?replicaAcks=1`, { pings: 5 }), 'redis.replicas').status).toBe('ok');
    const two = one(await doctor(`${master.url}?replicaAcks=2`, { pings: 5 }), 'redis.replicas');
    expect(two.status).toBe('fail');
    expect(two.evidence).toMatch(/only 1 replica/);
    expect(one(await doctor(replica.url, { pings: 5 }), 'redis.role').status).toBe('fail');
  });
});

describe('doctor: Redlock persistence', () => {
  const sets: RedlockNodes[] = [];
  afterAll(async () => {
    await Promise.all(sets.map((s) => s.stop()));
  });

  it('appendonly no on every node warns per node, with the restart caveat', async () => {
    const nodes = await startRedlock({ nodes: 3 });
    sets.push(nodes);
    const r = await doctor(nodes.url, { pings: 5 });
    expect(r.engine).toBe('redlock');
    expect(one(r, 'redlock.quorum').status).toBe('ok');
    const p = all(r, 'redis.persistence');
    expect(p).toHaveLength(3);
    for (const f of p) {
      expect(f.status).toBe('warn');
      expect(f.evidence).toMatch(/appendonly no/);
      expect(f.fix).toMatch(/longer than the longest TTL/);
    }
  });

  it('appendonly yes + appendfsync always is ok; everysec warns; a dead node lowers the quorum verdict', async () => {
    const nodes = await startRedlock({ nodes: 3, persistence: 'fsync-always' });
    sets.push(nodes);
    const r = await doctor(nodes.url, { pings: 5 });
    expect(all(r, 'redis.persistence').map((f) => f.status)).toEqual(['ok', 'ok', 'ok']);

    await withRedisClient(nodes.nodes[0]!.port, (c) => c.config('SET', 'appendfsync', 'everysec'));
    const everysec = all(await doctor(nodes.url, { pings: 5 }), 'redis.persistence');
    expect(everysec.map((f) => f.status)).toEqual(['warn', 'ok', 'ok']);
    expect(everysec[0]!.evidence).toMatch(/everysec/);

    await nodes.nodes[2]!.stop();
    const down = await doctor(nodes.url, { pings: 5, timeoutMs: 1000 });
    expect(one(down, 'redlock.quorum').status).toBe('warn');
    expect(one(down, 'redlock.node').status).toBe('fail');
  });
});
