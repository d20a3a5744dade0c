// redlock@4.2.0 ships no types: just what the benchmark uses.
declare module 'redlock' {
  import type { EventEmitter } from 'node:events';

  namespace Redlock {
    interface Options {
      driftFactor?: number;
      retryCount?: number;
      retryDelay?: number;
      retryJitter?: number;
    }
    interface Lock {
      readonly value: string;
      unlock(): Promise<void>;
    }
  }

  class Redlock extends EventEmitter {
    constructor(clients: readonly unknown[], options?: Redlock.Options);
    lock(resource: string, ttl: number): Promise<Redlock.Lock>;
    quit(): Promise<void>;
  }

  export = Redlock;
}

// redlock@5.0.0-beta.2 (installed as `redlock5`) has types, but its `exports` map hides them
// from NodeNext resolution: libs.ts casts this to the shipped declaration.
declare module 'redlock5';
