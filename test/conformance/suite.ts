/**
 * The conformance suite every driver runs (see suite/index.ts; one file per concern under
 * suite/). The factory files import it from here.
 */
export { defineConformanceSuite, type ConformanceFactory, type IsolatedEngine, type SuiteContext } from './suite/index.js';
