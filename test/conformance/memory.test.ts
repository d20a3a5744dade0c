import type { AcquireRequest, ExtendItem, TrySetDriver } from '../../src/drivers/driver.js';
import type { MarkStore } from '../../src/drivers/id-store.js';
import { MemoryDriver } from '../../src/drivers/memory/index.js';
import { ClosedError } from '../../src/errors.js';
import { defineConformanceSuite } from './suite.js';

/**
 * The memory "engine" is one MemoryDriver instance. Each `create()` returns a view of it with
 * its own close(), so that several clients (and a re-opened one) share locks and fencing
 * counters the way clients of one Redis server do, and closing one client does not wipe the
 * engine for the others.
 */
const engine = new MemoryDriver();

function view(): TrySetDriver & MarkStore {
  let closed = false;
  const open = (): void => {
    if (closed) throw new ClosedError('memory driver view');
  };
  return {
    kind: 'try-set',
    info: engine.info,
    tryAcquire: async (req: AcquireRequest, queue?: boolean) => (open(), engine.tryAcquire(req, queue)),
    watch: async (key: string, owner: string) => (open(), engine.watch(key, owner)),
    cancel: async (key: string, owner: string) => (open(), engine.cancel(key, owner)),
    keyState: async (key: string) => (open(), engine.keyState(key)),
    extend: async (items: readonly ExtendItem[]) => (open(), engine.extend(items)),
    release: async (key: string, owner: string) => (open(), engine.release(key, owner)),
    inspect: async (key: string) => (open(), engine.inspect(key)),
    list: async (prefix: string, page: { readonly cursor?: string; readonly limit: number }) => (open(), engine.list(prefix, page)),
    forceRelease: async (key: string) => (open(), engine.forceRelease(key)),
    readMark: async (key: string) => (open(), engine.readMark(key)),
    raiseMark: async (key: string, owner: string, mark: bigint) => (open(), engine.raiseMark(key, owner, mark)),
    close: () => {
      closed = true;
      return Promise.resolve();
    },
  };
}

defineConformanceSuite({
  name: 'memory',
  create: () => Promise.resolve(view()),
  // Process-local: no url, so the cross-process tests are not defined. A standalone child can
  // still use its own memory engine, which is enough for the close()/open-handles check.
  standaloneUrl: () => 'memory:',
  removeBehindBack: (key) => {
    engine.forget(key);
    return Promise.resolve();
  },
  waitResidue: () => Promise.resolve({ watchedKeys: engine.watchedKeys }),
});
