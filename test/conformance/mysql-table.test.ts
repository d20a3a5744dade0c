import { mysqlFactory } from './mysql-engine.js';
import { defineConformanceSuite } from './suite.js';

defineConformanceSuite(mysqlFactory('table'));
