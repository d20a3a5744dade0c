import { Etcd3, type IRequestOp } from 'etcd3';
import { parseEtcdUrl, type EtcdUrl } from '../../../drivers/etcd/index.js';
import { unreachableLine } from '../../output.js';
import { DemoError, type Store, type StoreFactory } from '../store.js';

function parse(url: string): EtcdUrl {
  try {
    return parseEtcdUrl(url);
  } catch (e) {
    throw new DemoError((e as Error).message, { cause: e });
  }
}

/**
 * Stock as one key and orders as one key per order, under the same prefix as the locks
 * (`<prefix>demo/flash-sale/<item>/`). A sale is one transaction without a compare: a blind put of
 * the stock the buyer computed, so that without the lock two buyers really overwrite each other.
 */
class EtcdStore implements Store {
  readonly backend = 'etcd';
  private readonly stockKey: string;
  private readonly ordersPrefix: string;
  private readonly itemPrefix: string;
  private closed = false;

  constructor(
    private readonly etcd: Etcd3,
    prefix: string,
    item: string,
  ) {
    this.itemPrefix = `${prefix}demo/flash-sale/${encodeURIComponent(item)}/`;
    this.stockKey = `${this.itemPrefix}stock`;
    this.ordersPrefix = `${this.itemPrefix}orders/`;
  }

  async setup(stock: number): Promise<void> {
    await this.etcd.delete().prefix(this.ordersPrefix).exec();
    await this.etcd.put(this.stockKey).value(String(stock)).exec();
  }

  async readStock(): Promise<number> {
    const v = await this.etcd.get(this.stockKey).string();
    if (v === null) throw new DemoError(`No stock key ${this.stockKey}: was the store set up?`);
    return Number(v);
  }

  async recordSale(newStock: number, buyer: string): Promise<void> {
    const ops: IRequestOp[] = [
      { request_put: { key: Buffer.from(this.stockKey), value: Buffer.from(String(newStock)) } },
      { request_put: { key: Buffer.from(`${this.ordersPrefix}${encodeURIComponent(buyer)}`), value: Buffer.from(String(Date.now())) } },
    ];
    await this.etcd.kv.txn({ compare: [], success: ops, failure: [] });
  }

  async results(): Promise<{ stock: number; orders: number }> {
    const [stock, orders] = await Promise.all([this.readStock(), this.etcd.getAll().prefix(this.ordersPrefix).count()]);
    return { stock, orders };
  }

  async cleanup(): Promise<void> {
    await this.etcd.delete().prefix(this.itemPrefix).exec();
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.etcd.close();
    }
    return Promise.resolve();
  }
}

export const etcdStore: StoreFactory = {
  backend: 'etcd',
  describe: (url) => {
    parse(url);
    return url;
  },
  async open(url, item) {
    const { hosts, prefix } = parse(url);
    const etcd = new Etcd3({ hosts });
    try {
      // Fail fast when no member answers (etcd3 would otherwise retry for its dial timeout).
      await etcd.maintenance.status({ deadline: Date.now() + 3000 });
    } catch (e) {
      etcd.close();
      throw new DemoError(unreachableLine('etcd', hosts.join(', '), (e as Error).message), { cause: e });
    }
    return new EtcdStore(etcd, prefix ?? 'dlock/', item);
  },
};
