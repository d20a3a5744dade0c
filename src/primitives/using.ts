import { InvalidArgumentError } from '../errors.js';

/** Something held that runs code in its reentrancy scope and is given back by `await using`. */
interface Held extends AsyncDisposable {
  run<T>(fn: () => T): T;
}

/**
 * The body of the primitives' `using([options], fn)`: take with `options`, run `fn` in the held
 * thing's scope, and always give it back, even when `fn` throws.
 */
export async function usingHeld<O extends object, H extends Held, T>(
  take: (options: O) => Promise<H>,
  optionsOrFn: O | ((held: H) => Promise<T> | T),
  maybeFn: ((held: H) => Promise<T> | T) | undefined,
): Promise<T> {
  const fn = typeof optionsOrFn === 'function' ? optionsOrFn : maybeFn;
  if (typeof fn !== 'function') throw new InvalidArgumentError('using([options], fn): fn must be a function.');
  const held = await take(typeof optionsOrFn === 'function' ? ({} as O) : optionsOrFn);
  try {
    return await held.run(() => fn(held));
  } finally {
    await held[Symbol.asyncDispose]();
  }
}
