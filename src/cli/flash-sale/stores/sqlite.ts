import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { sqlitePath } from '../../../connect.js';
import { DemoError, type Store, type StoreFactory } from '../store.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS dlock_demo_stock (
  item  TEXT PRIMARY KEY,
  stock INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dlock_demo_orders (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  item       TEXT NOT NULL,
  buyer      TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dlock_demo_orders_item ON dlock_demo_orders (item);
`;

function pathOf(url: string): string {
  try {
    return sqlitePath(url);
  } catch (e) {
    throw new DemoError((e as Error).message, { cause: e });
  }
}

/**
 * Stock and orders as two tables in the lock database file itself (WAL mode, busy timeout, so
 * many processes can share it). better-sqlite3 is synchronous: each call is one short statement.
 */
class SqliteStore implements Store {
  readonly backend = 'sqlite';
  private closed = false;

  constructor(
    private readonly db: Database.Database,
    private readonly item: string,
  ) {}

  setup(stock: number): Promise<void> {
    this.db.exec(SCHEMA);
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM dlock_demo_orders WHERE item = ?').run(this.item);
      this.db
        .prepare('INSERT INTO dlock_demo_stock (item, stock) VALUES (?, ?) ON CONFLICT (item) DO UPDATE SET stock = excluded.stock')
        .run(this.item, stock);
    }).immediate();
    return Promise.resolve();
  }

  readStock(): Promise<number> {
    const row = this.db.prepare('SELECT stock FROM dlock_demo_stock WHERE item = ?').get(this.item) as
      | { stock: number }
      | undefined;
    if (!row) return Promise.reject(new DemoError(`No stock row for item "${this.item}": was the store set up?`));
    return Promise.resolve(row.stock);
  }

  recordSale(newStock: number, buyer: string): Promise<void> {
    this.db.transaction(() => {
      this.db.prepare('UPDATE dlock_demo_stock SET stock = ? WHERE item = ?').run(newStock, this.item);
      this.db
        .prepare('INSERT INTO dlock_demo_orders (item, buyer, created_at) VALUES (?, ?, ?)')
        .run(this.item, buyer, Date.now());
    }).immediate();
    return Promise.resolve();
  }

  async results(): Promise<{ stock: number; orders: number }> {
    const stock = await this.readStock();
    const row = this.db.prepare('SELECT COUNT(*) AS n FROM dlock_demo_orders WHERE item = ?').get(this.item) as { n: number };
    return { stock, orders: row.n };
  }

  cleanup(): Promise<void> {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM dlock_demo_orders WHERE item = ?').run(this.item);
      this.db.prepare('DELETE FROM dlock_demo_stock WHERE item = ?').run(this.item);
    }).immediate();
    return Promise.resolve();
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.db.close();
    }
    return Promise.resolve();
  }
}

export const sqliteStore: StoreFactory = {
  backend: 'sqlite',
  describe(url) {
    return `sqlite:${pathOf(url)}`;
  },
  // eslint-disable-next-line @typescript-eslint/require-await -- async so that every failure is a rejection
  async open(url, item) {
    const path = pathOf(url);
    if (!existsSync(dirname(path) || '.')) {
      throw new DemoError(`Cannot open ${url}: the directory ${dirname(path)} does not exist.`);
    }
    let db: Database.Database;
    try {
      db = new Database(path);
      db.pragma('journal_mode = WAL');
      db.pragma('busy_timeout = 10000');
      db.pragma('synchronous = NORMAL');
    } catch (e) {
      throw new DemoError(`Cannot open the SQLite database ${path}: ${(e as Error).message}`, { cause: e });
    }
    return new SqliteStore(db, item);
  },
};
