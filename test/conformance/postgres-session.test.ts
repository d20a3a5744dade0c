import { postgresFactory } from './postgres-engine.js';
import { defineConformanceSuite } from './suite.js';

defineConformanceSuite(postgresFactory('session'));
