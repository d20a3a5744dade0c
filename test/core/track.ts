/** The settled state of a promise, read without awaiting it (for tests driven by fake timers). */
export interface Tracked<T> {
  state: 'pending' | 'resolved' | 'rejected';
  value?: T;
  error?: unknown;
}

/** Track `p`: its state, value and error update as it settles. */
export function track<T>(p: Promise<T>): Tracked<T> {
  const t: Tracked<T> = { state: 'pending' };
  p.then(
    (v) => Object.assign(t, { state: 'resolved', value: v }),
    (e: unknown) => Object.assign(t, { state: 'rejected', error: e }),
  );
  return t;
}
