import { createServer } from 'node:net';

/**
 * A TCP port that was free on 127.0.0.1 a moment ago: listen on port 0, read what the kernel
 * chose, close. Someone else can take it before we use it, so callers that bind a server to it
 * must retry with a new port when the bind fails (see `startRedis`).
 */
export function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error(`Unexpected listen address: ${String(address)}`));
        return;
      }
      server.close((err) => (err ? reject(err) : resolve(address.port)));
    });
  });
}
