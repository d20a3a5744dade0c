/** Every key a driver's list() names under `prefix`, page by page, checking each page's bound. */
import { expect } from 'vitest';
import type { DriverBase } from '../../src/drivers/driver.js';

export async function allPages(driver: Pick<DriverBase, 'list'>, prefix: string, limit: number): Promise<string[]> {
  const seen: string[] = [];
  let cursor: string | undefined;
  let pages = 0;
  do {
    const page = await driver.list(prefix, { limit, ...(cursor === undefined ? {} : { cursor }) });
    expect(page.keys.length).toBeLessThanOrEqual(limit);
    seen.push(...page.keys);
    cursor = page.cursor;
    expect(++pages, 'list() pages never end').toBeLessThan(1000);
  } while (cursor !== undefined);
  return seen;
}
