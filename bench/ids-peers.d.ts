// flake-idgen@1.4.0 ships no types: just what bench/ids.ts uses.
declare module 'flake-idgen' {
  namespace FlakeId {
    interface Options {
      /** Generator id, 0 to 1023. */
      id?: number;
      datacenter?: number;
      worker?: number;
      /** Subtracted from Date.now(). */
      epoch?: number;
      seqMask?: number;
    }
  }
  class FlakeId {
    constructor(options?: FlakeId.Options);
    /** Without a callback: the id, or a throw when 4,096 ids were made in this ms. */
    next(): Buffer;
    next(cb: (error: Error | null, id: Buffer) => void): void;
  }
  export = FlakeId;
}
