/** Helpers of the doctor tests: the findings of one check. */
import type { DoctorFinding, DoctorReport } from '../../src/doctor/index.js';

/** Every finding of `check` (several for multi-node engines). */
export function all(report: DoctorReport, check: string): DoctorFinding[] {
  return report.findings.filter((f) => f.check === check);
}

/** The one finding of `check`; throws (with the report) when there is not exactly one. */
export function one(report: DoctorReport, check: string): DoctorFinding {
  const found = all(report, check);
  if (found.length !== 1) throw new Error(`expected one "${check}" finding, got ${found.length}: ${JSON.stringify(report, null, 2)}`);
  return found[0]!;
}
