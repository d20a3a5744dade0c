/**
 * doctor checks for ZooKeeper: the session timeout the server negotiated against the one asked
 * for, the servers' limits (four letter word `conf`, when whitelisted), each server's mode
 * (`srvr`), and the round trip (`exists /`). Opens one session and creates nothing. The clock
 * offset is not measured: ZooKeeper shows its clock only in the times of a write.
 */
import { connect } from 'node:net';
import type * as zk from 'node-zookeeper-client';
import { parseZooKeeperUrl } from '../drivers/zookeeper/index.js';
import { zkClient } from '../drivers/zookeeper/session.js';
import { down, ok, roundTrip, unreachable, warn, type DoctorFinding, type ResolvedDoctorOptions } from './report.js';

/** The driver's default (see ZooKeeperDriverOptions.sessionTimeoutMs). */
const DEFAULT_SESSION_TIMEOUT_MS = 10_000;

/**
 * Send a four letter word (`srvr`, `conf`...) to `host:port`; resolves the answer ('' when the
 * server refuses it, closes or stays silent for `timeoutMs`). Never rejects.
 */
export function fourLetter(host: string, port: number, word: string, timeoutMs: number): Promise<string> {
  return new Promise<string>((resolve) => {
    let out = '';
    const socket = connect(port, host, () => socket.write(word));
    const done = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(out);
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on('data', (d: Buffer) => (out += d.toString()));
    socket.on('close', done);
    socket.on('error', done);
  });
}

/** {@link fourLetter} to a `host:port` of a connection string. */
function ask(hostPort: string, word: string, timeoutMs: number): Promise<string> {
  const i = hostPort.lastIndexOf(':');
  return fourLetter(hostPort.slice(0, i), Number(hostPort.slice(i + 1)), word, timeoutMs);
}

const field = (text: string, name: string): string | undefined => new RegExp(`^${name}[=:]\\s*(\\S+)`, 'm').exec(text)?.[1];

/** One session to the ensemble, connected, or UnavailableError. */
function openSession(connectionString: string, sessionTimeoutMs: number, timeoutMs: number): Promise<zk.Client> {
  const client = zkClient().createClient(connectionString, { sessionTimeout: sessionTimeoutMs, spinDelay: 200, retries: 0 });
  return new Promise<zk.Client>((resolve, reject) => {
    const timer = setTimeout(() => {
      client.close();
      reject(down(`ZooKeeper at ${connectionString}`, `no session within ${timeoutMs} ms`));
    }, timeoutMs);
    client.once('connected', () => {
      clearTimeout(timer);
      resolve(client);
    });
    client.connect();
  });
}

/** Every ZooKeeper check for `url`. */
export async function checkZooKeeper(url: string, opts: ResolvedDoctorOptions): Promise<DoctorFinding[]> {
  const parsed = parseZooKeeperUrl(url);
  const asked = parsed.sessionTimeoutMs ?? DEFAULT_SESSION_TIMEOUT_MS;
  const servers = parsed.connectionString.split(',');
  const client = await openSession(parsed.connectionString, asked, opts.timeoutMs);
  const findings: DoctorFinding[] = [];
  try {
    // The servers first: their limits explain the negotiated value.
    const modes: string[] = [];
    let limits: string | undefined;
    let confRefused = false;
    for (const s of servers) {
      const srvr = await ask(s, 'srvr', opts.timeoutMs);
      const mode = field(srvr, 'Mode');
      modes.push(`${s} ${mode ?? (srvr === '' ? 'no answer' : /whitelist/i.test(srvr) ? 'srvr not whitelisted' : 'not serving')}`);
      if (limits === undefined) {
        const conf = await ask(s, 'conf', opts.timeoutMs);
        const tick = field(conf, 'tickTime');
        if (tick) limits = `tickTime ${tick} ms, minSessionTimeout ${field(conf, 'minSessionTimeout') ?? '?'} ms, maxSessionTimeout ${field(conf, 'maxSessionTimeout') ?? '?'} ms (from ${s})`;
        else confRefused = true;
      }
    }
    const serving = modes.filter((m) => / (leader|follower|standalone|observer)$/.test(m)).length;
    const leader = modes.some((m) => / (leader|standalone)$/.test(m));
    const unknown = modes.every((m) => / (srvr not whitelisted|no answer)$/.test(m));
    findings.push(
      unknown
        ? ok('zookeeper.ensemble', `not measured: no server answered the four letter word srvr (add srvr to 4lw.commands.whitelist to have it checked); the session connected`)
        : serving === servers.length && leader
          ? ok('zookeeper.ensemble', modes.join(', '))
          : warn('zookeeper.ensemble', `${modes.join(', ')}: ${serving} of ${servers.length} servers serve${leader ? '' : ', no leader seen'}`, 'Bring the missing servers back; with fewer than a majority serving, no session can be kept.'),
    );

    const negotiated = client.getSessionTimeout();
    const why = limits ?? (confRefused ? 'the server limits are not readable (add conf to 4lw.commands.whitelist)' : 'server limits unknown');
    const base = `asked for ${asked} ms, the server granted ${negotiated} ms; ${why}`;
    if (negotiated === asked) findings.push(ok('zookeeper.session-timeout', base));
    else if (negotiated < asked) {
      findings.push(warn('zookeeper.session-timeout', `${base}: a pause or network cut shorter than you planned for (${negotiated} ms) ends the session, and every lock it holds`, `Raise the servers' maxSessionTimeout to at least ${asked} ms (the server caps the request at it), or ask for sessionTimeoutMs=${negotiated} and plan for it.`));
    } else {
      findings.push(warn('zookeeper.session-timeout', `${base}: a crashed holder keeps its locks ${negotiated} ms, not ${asked} ms`, `Lower the servers' minSessionTimeout to at most ${asked} ms (the server raises shorter requests to it), or ask for sessionTimeoutMs=${negotiated}.`));
    }

    const read = (): Promise<void> =>
      new Promise<void>((resolve, reject) => client.exists('/', (e) => (e ? reject(e instanceof Error ? e : new Error(String(e))) : resolve())));
    try {
      findings.push(await roundTrip('exists / reads', read, opts));
    } catch (e) {
      throw unreachable(`ZooKeeper at ${parsed.connectionString}`, e);
    }
    findings.push(ok('clock', 'not measured: ZooKeeper shows its clock only in the times of a write, and doctor writes nothing; session expiry runs on the server\'s own clock, so an offset does not shorten it'));
    return findings;
  } finally {
    client.close();
  }
}
