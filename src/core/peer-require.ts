/**
 * A `require` that loads an engine's client synchronously, resolved from dlock's own directory.
 * This is the ESM version; the CommonJS build replaces this file with `exports.peerRequire =
 * require` (scripts/post-build.mjs), since `import.meta` does not exist there.
 * @internal
 */
import { createRequire } from 'node:module';

// eslint-disable-next-line @typescript-eslint/ban-ts-comment -- valid in one of the two builds only
// @ts-ignore TS1343 in the CommonJS build, whose copy of this file post-build.mjs rewrites
export const peerRequire: NodeJS.Require = createRequire(import.meta.url);
