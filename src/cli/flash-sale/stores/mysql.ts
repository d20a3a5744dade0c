import type { Connection } from 'mysql2/promise';
import { resolveOptions } from '../../../drivers/mysql/options.js';
import { unreachableLine } from '../../output.js';
import { DemoError, type Store, type StoreFactory } from '../store.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS dlock_demo_stock (
  item  VARCHAR(191) NOT NULL PRIMARY KEY,
  stock INT NOT NULL
) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS dlock_demo_orders (
  id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  item       VARCHAR(191) NOT NULL,
  buyer      VARCHAR(191) NOT NULL,
  created_at DATETIME(3) NOT NULL,
  KEY dlock_demo_orders_item (item)
) ENGINE = InnoDB`;

function optionsOf(url: string): ReturnType<typeof resolveOptions> {
  try {
    return resolveOptions({ url });
  } catch (e) {
    throw new DemoError(`"${url}" is not a usable MySQL URL: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Stock and orders as two InnoDB tables in the lock database itself. Each sale is one transaction
 * (a blind UPDATE of the stock the buyer read, plus the order row): without the lock, the
 * read-modify-write race between buyers is real and the demo oversells.
 */
class MysqlStore implements Store {
  readonly backend = 'mysql';
  private closed = false;

  constructor(
    private readonly db: Connection,
    private readonly item: string,
  ) {}

  async setup(stock: number): Promise<void> {
    await this.db.query(SCHEMA);
    await this.db.query(
      `START TRANSACTION;
       DELETE FROM dlock_demo_orders WHERE item = ?;
       INSERT INTO dlock_demo_stock (item, stock) VALUES (?, ?) ON DUPLICATE KEY UPDATE stock = ?;
       COMMIT`,
      [this.item, this.item, stock, stock],
    );
  }

  async readStock(): Promise<number> {
    const [rows] = await this.db.query('SELECT stock FROM dlock_demo_stock WHERE item = ?', [this.item]);
    const row = (rows as Array<{ stock: number }>)[0];
    if (!row) throw new DemoError(`No stock row for item "${this.item}": was the store set up?`);
    return Number(row.stock);
  }

  async recordSale(newStock: number, buyer: string): Promise<void> {
    await this.db.query(
      `START TRANSACTION;
       UPDATE dlock_demo_stock SET stock = ? WHERE item = ?;
       INSERT INTO dlock_demo_orders (item, buyer, created_at) VALUES (?, ?, UTC_TIMESTAMP(3));
       COMMIT`,
      [newStock, this.item, this.item, buyer],
    );
  }

  async results(): Promise<{ stock: number; orders: number }> {
    const stock = await this.readStock();
    const [rows] = await this.db.query('SELECT COUNT(*) AS n FROM dlock_demo_orders WHERE item = ?', [this.item]);
    return { stock, orders: Number((rows as Array<{ n: number }>)[0]?.n ?? 0) };
  }

  async cleanup(): Promise<void> {
    await this.db.query('DELETE FROM dlock_demo_orders WHERE item = ?; DELETE FROM dlock_demo_stock WHERE item = ?', [
      this.item,
      this.item,
    ]);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.db.end();
    } catch {
      this.db.destroy();
    }
  }
}

export const mysqlStore: StoreFactory = {
  backend: 'mysql',
  describe(url) {
    return `mysql://${optionsOf(url).display}`;
  },
  async open(url, item) {
    const o = optionsOf(url);
    const mysql = await import('mysql2/promise');
    let db: Connection;
    try {
      db = await mysql.createConnection({ ...o.connection, multipleStatements: true });
    } catch (e) {
      throw new DemoError(unreachableLine('MySQL', o.display, (e as Error).message), { cause: e });
    }
    db.on('error', () => undefined);
    return new MysqlStore(db, item);
  },
};
