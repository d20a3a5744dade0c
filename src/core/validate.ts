import { InvalidArgumentError, OutOfRangeError } from '../errors.js';

/** Largest delay Node timers honour; anything above is silently clamped to 1 ms by Node. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A lock key: a non-empty string. */
export function validateKey(key: unknown): string {
  if (typeof key !== 'string') {
    throw new InvalidArgumentError(`Lock key must be a string, got ${key === null ? 'null' : typeof key}.`);
  }
  if (key.length === 0) throw new InvalidArgumentError('Lock key must be a non-empty string.');
  return key;
}

/**
 * A whole number of milliseconds in [min, MAX_TIMER_MS]. `undefined` yields `fallback`.
 * NaN, Infinity, fractions, negatives and values timers would clamp are refused by name.
 */
export function validateMs(option: string, value: unknown, min: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new OutOfRangeError(option, `${option} must be a finite number of milliseconds, got ${describe(value)}.`);
  }
  if (!Number.isInteger(value)) {
    throw new OutOfRangeError(option, `${option} must be a whole number of milliseconds, got ${value}.`);
  }
  if (value < min || value > MAX_TIMER_MS) {
    throw new OutOfRangeError(option, `${option} must be between ${min} and ${MAX_TIMER_MS} ms, got ${value}.`);
  }
  return value;
}

/** A ratio strictly between 0 and 1 (exclusive). */
export function validateRatio(option: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value >= 1) {
    throw new OutOfRangeError(option, `${option} must be a number strictly between 0 and 1, got ${describe(value)}.`);
  }
  return value;
}

/** An optional AbortSignal. */
export function validateSignal(value: unknown): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof AbortSignal)) throw new InvalidArgumentError('signal must be an AbortSignal.');
  return value;
}

/** An optional boolean. */
export function validateBool(option: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new InvalidArgumentError(`${option} must be a boolean, got ${typeof value}.`);
  return value;
}

function describe(value: unknown): string {
  return typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value);
}
