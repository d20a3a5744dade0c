/** Nearest-rank percentile (p in [0, 100]) of unsorted samples; 0 for none. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return 0;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] ?? 0;
}

/** Round to 2 decimals for reports. */
export function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
