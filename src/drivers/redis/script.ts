/** A Lua script loaded from src/drivers/redis/lua (see scripts/gen-lua.mjs). */
export interface LuaScript {
  readonly name: string;
  /** How many KEYS the script takes (from its header). */
  readonly numberOfKeys: number;
  /** SHA1 of the source, for EVALSHA. */
  readonly sha: string;
  readonly source: string;
}
