import { InvalidArgumentError } from 'commander';

/** A commander argument parser for a whole number in [min, max]. */
export function intArg(min: number, max: number): (value: string) => number {
  return (value) => {
    const n = /^[+]?\d+$/.test(value.trim()) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}.`);
    }
    return n;
  };
}
