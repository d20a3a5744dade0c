import * as zk from 'node-zookeeper-client';
import { parseZooKeeperUrl } from '../../../drivers/zookeeper/index.js';
import { encodeName } from '../../../drivers/zookeeper/paths.js';
import { unreachableLine } from '../../output.js';
import { DemoError, type Store, type StoreFactory } from '../store.js';

const CONNECT_TIMEOUT_MS = 5000;

function parse(url: string): ReturnType<typeof parseZooKeeperUrl> {
  try {
    return parseZooKeeperUrl(url);
  } catch (e) {
    throw new DemoError((e as Error).message, { cause: e });
  }
}

/** Promisify one client call; the client's exceptions are Errors at run time. */
function call<T>(fn: (cb: (e: Error | zk.Exception | null, value: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    fn((e, value) => (e ? reject(e instanceof Error ? e : new Error(e.toString())) : resolve(value)));
  });
}

function isNoNode(e: unknown): boolean {
  return e instanceof zk.Exception && e.getCode() === zk.Exception.NO_NODE;
}

/**
 * Stock as the data of one znode (`<root>/demo/flash-sale/<item>/stock`, written blind with
 * version -1, so that without a lock the read-modify-write race is real) and orders as persistent
 * sequential children of `.../orders`; a sale is one multi (setData + create).
 */
class ZooKeeperStore implements Store {
  readonly backend = 'zookeeper';
  private readonly base: string;
  private readonly stockPath: string;
  private readonly ordersPath: string;
  private closed = false;

  constructor(
    private readonly client: zk.Client,
    root: string,
    item: string,
  ) {
    this.base = `${root}/demo/flash-sale/${encodeName(item)}`;
    this.stockPath = `${this.base}/stock`;
    this.ordersPath = `${this.base}/orders`;
  }

  async setup(stock: number): Promise<void> {
    await this.cleanup();
    await call<string>((cb) => this.client.mkdirp(this.ordersPath, cb));
    await call<string>((cb) => this.client.create(this.stockPath, Buffer.from(String(stock)), zk.CreateMode.PERSISTENT, cb));
  }

  async readStock(): Promise<number> {
    try {
      const data = await call<Buffer>((cb) => this.client.getData(this.stockPath, cb));
      return Number(data.toString('utf8'));
    } catch (e) {
      if (isNoNode(e)) throw new DemoError(`No stock znode ${this.stockPath}: was the store set up?`, { cause: e });
      throw e;
    }
  }

  async recordSale(newStock: number, buyer: string): Promise<void> {
    await call<unknown>((cb) =>
      this.client
        .transaction()
        .setData(this.stockPath, Buffer.from(String(newStock)), -1)
        .create(`${this.ordersPath}/order-`, Buffer.from(buyer), zk.CreateMode.PERSISTENT_SEQUENTIAL)
        .commit(cb),
    );
  }

  async results(): Promise<{ stock: number; orders: number }> {
    const [stock, stat] = await Promise.all([
      this.readStock(),
      call<zk.Stat | null>((cb) => this.client.exists(this.ordersPath, (e, s) => cb(e, s ?? null))),
    ]);
    return { stock, orders: stat?.numChildren ?? 0 };
  }

  async cleanup(): Promise<void> {
    const remove = async (path: string): Promise<void> => {
      try {
        await call<void>((cb) => this.client.remove(path, -1, (e) => cb(e, undefined)));
      } catch (e) {
        if (!isNoNode(e)) throw e;
      }
    };
    let orders: string[] = [];
    try {
      orders = await call<string[]>((cb) => this.client.getChildren(this.ordersPath, cb));
    } catch (e) {
      if (!isNoNode(e)) throw e;
    }
    // Sent together: one round trip for all the orders.
    await Promise.all(orders.map((o) => remove(`${this.ordersPath}/${o}`)));
    await Promise.all([remove(this.ordersPath), remove(this.stockPath)]);
    await remove(this.base);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await closeClient(this.client);
  }
}

/** Close the session and wait (briefly) for the server to drop the connection. */
function closeClient(client: zk.Client): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 1000);
    client.once('disconnected', () => {
      clearTimeout(timer);
      resolve();
    });
    client.close();
  });
}

export const zookeeperStore: StoreFactory = {
  backend: 'zookeeper',
  describe: (url) => {
    parse(url);
    return url;
  },
  async open(url, item) {
    const { connectionString, root } = parse(url);
    const client = zk.createClient(connectionString, { sessionTimeout: 10_000, spinDelay: 200 });
    const connected = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), CONNECT_TIMEOUT_MS);
      client.once('connected', () => {
        clearTimeout(timer);
        resolve(true);
      });
      client.connect();
    });
    if (!connected) {
      // The client would keep retrying: stop it for good.
      const cm = (client as unknown as { connectionManager?: { connect?: () => void; socket?: { destroy(): void } } }).connectionManager;
      if (cm) cm.connect = () => undefined;
      client.close();
      cm?.socket?.destroy();
      throw new DemoError(unreachableLine('ZooKeeper', url, `no connection within ${CONNECT_TIMEOUT_MS} ms`));
    }
    return new ZooKeeperStore(client, root, item);
  },
};
