import pg from 'pg';
import { unreachableLine } from '../../output.js';
import { DemoError, type Store, type StoreFactory } from '../store.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS dlock_demo_stock (
  item  text PRIMARY KEY,
  stock integer NOT NULL
);
CREATE TABLE IF NOT EXISTS dlock_demo_orders (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  item       text NOT NULL,
  buyer      text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dlock_demo_orders_item ON dlock_demo_orders (item);`;

/** The URL without dlock's own query options (`mode`...), which `pg` does not know. */
function pgUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch (e) {
    throw new DemoError(`"${url}" is not a valid PostgreSQL URL: use postgres://USER@HOST:PORT/DB.`, { cause: e });
  }
  if (u.hostname === '') throw new DemoError(`"${url}" names no host: use postgres://USER@HOST:PORT/DB.`);
  for (const p of ['mode', 'tablePrefix', 'maxConnections']) u.searchParams.delete(p);
  return u;
}

function redacted(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.toString();
}

/** Stock and orders as two tables in the lock database; a sale is one statement (atomic). */
class PostgresStore implements Store {
  readonly backend = 'postgres';
  private closed = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly item: string,
  ) {}

  async setup(stock: number): Promise<void> {
    // Several statements in one query string run as one implicit transaction.
    await this.pool.query(SCHEMA);
    await this.pool.query(
      `WITH cleared AS (DELETE FROM dlock_demo_orders WHERE item = $1)
       INSERT INTO dlock_demo_stock (item, stock) VALUES ($1, $2)
       ON CONFLICT (item) DO UPDATE SET stock = excluded.stock`,
      [this.item, stock],
    );
  }

  async readStock(): Promise<number> {
    const { rows } = await this.pool.query<{ stock: number }>('SELECT stock FROM dlock_demo_stock WHERE item = $1', [this.item]);
    if (!rows[0]) throw new DemoError(`No stock row for item "${this.item}": was the store set up?`);
    return rows[0].stock;
  }

  async recordSale(newStock: number, buyer: string): Promise<void> {
    // A blind write of the buyer's read minus one, and the order, in one statement.
    await this.pool.query(
      `WITH sold AS (UPDATE dlock_demo_stock SET stock = $1 WHERE item = $2)
       INSERT INTO dlock_demo_orders (item, buyer) VALUES ($2, $3)`,
      [newStock, this.item, buyer],
    );
  }

  async results(): Promise<{ stock: number; orders: number }> {
    const stock = await this.readStock();
    const { rows } = await this.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM dlock_demo_orders WHERE item = $1', [this.item]);
    return { stock, orders: rows[0]?.n ?? 0 };
  }

  async cleanup(): Promise<void> {
    await this.pool.query(
      `WITH gone AS (DELETE FROM dlock_demo_orders WHERE item = $1) DELETE FROM dlock_demo_stock WHERE item = $1`,
      [this.item],
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end().catch(() => undefined);
  }
}

export const postgresStore: StoreFactory = {
  backend: 'postgres',
  describe(url) {
    return redacted(pgUrl(url).toString());
  },
  async open(url, item) {
    const pool = new pg.Pool({ connectionString: pgUrl(url).toString(), max: 4, connectionTimeoutMillis: 5000, allowExitOnIdle: true });
    pool.on('error', () => undefined);
    try {
      await pool.query('SELECT 1');
    } catch (e) {
      await pool.end().catch(() => undefined);
      throw new DemoError(unreachableLine('PostgreSQL', redacted(pgUrl(url).toString()), (e as Error).message), {
        cause: e,
      });
    }
    return new PostgresStore(pool, item);
  },
};
