/**
 * The clock every process on one host shares, for TTLs stored in the SQLite file.
 *
 * There is no server to ask for the time, so expiry instants are written in the host's
 * CLOCK_MONOTONIC (`process.hrtime.bigint()`): all processes on a Linux host read the same clock,
 * and it ignores wall-clock steps (NTP, an operator's `date -s`). It restarts at boot, so each
 * row also records the boot it was written in; a row from another boot is expired.
 */
import { readFileSync } from 'node:fs';
import { uptime } from 'node:os';

const NS_PER_MS = 1_000_000n;

/** One reading of the host's monotonic clock, in whole milliseconds. */
export interface HostNow {
  /** Rounded down: a row is live while `expires_at > floor` (it expires no earlier than stored). */
  readonly floor: bigint;
  /** Rounded up: new expiry instants count from here (the TTL never starts before the request). */
  readonly ceil: bigint;
}

/** Read the host's CLOCK_MONOTONIC. */
export function hostNow(): HostNow {
  const ns = process.hrtime.bigint();
  return { floor: ns / NS_PER_MS, ceil: (ns + NS_PER_MS - 1n) / NS_PER_MS };
}

/**
 * An id of the current boot of this host. Linux: the kernel's random boot id. Elsewhere: the boot
 * instant estimated from the wall clock and the uptime, rounded to 10 s (it only names the boot;
 * it never decides whether a lock is valid).
 */
export function hostBootId(): string {
  try {
    const id = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    if (id.length > 0) return id;
  } catch {
    // not Linux (or /proc is hidden): fall back to the estimate below
  }
  return `booted-at:${Math.round((Date.now() - uptime() * 1000) / 10_000) * 10_000}`;
}
