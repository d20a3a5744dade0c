/**
 * The bit layout of a snowflake id: a positive 63-bit integer (it fits a signed int64 column and
 * never sets the sign bit) made of, from the top:
 *
 *     [ time: timeBits ][ worker: workerBits ][ sequence: sequenceBits ]
 *
 * `time` counts `unitMs`-long units since `epochMs`, `worker` is the id of the generator, and
 * `sequence` numbers the ids one worker issues within one unit. Ids of one worker therefore sort by
 * time first, and ids of all workers are trend-increasing (k-sorted by time).
 *
 * Everything here is exact: ids are `bigint` end to end; the only JS numbers are the three fields
 * (each kept far below 2^53 by validation) and the timestamp, which validation keeps inside the
 * range of a JS `Date` (so even a crafted id decodes to a valid date).
 */
import { InvalidArgumentError, OutOfRangeError } from '../errors.js';

/** 2026-01-01T00:00:00Z: the default epoch. With 41 bits of ms the default layout lasts until 2095-09. */
export const DEFAULT_EPOCH_MS = Date.UTC(2026, 0, 1);

/** The largest id any layout can produce: 2^63 - 1. */
export const MAX_ID = (1n << 63n) - 1n;

/** Largest timestamp a JS `Date` can hold (ms since 1970). */
const MAX_DATE_MS = 8.64e15;

/** Options of {@link IdLayout}. Bits must sum to 63; a missing one is what the others leave. */
export interface LayoutOptions {
  /** Bits of time. Default: 63 - workerBits - sequenceBits (41 with the other defaults). */
  timeBits?: number;
  /** Bits of worker id (2^workerBits generators at once). Default 10, or what is left. */
  workerBits?: number;
  /** Bits of sequence (2^sequenceBits ids per worker per time unit). Default 12, or what is left. */
  sequenceBits?: number;
  /** Start of time, in ms since 1970 (or a Date). Default 2026-01-01T00:00:00Z. */
  epochMs?: number | Date;
  /** Length of one time unit in ms (Sonyflake uses 10). Default 1. */
  unitMs?: number;
}

/** The three fields of an id. */
export interface IdParts {
  /** Time units since the epoch. */
  readonly time: number;
  /** The worker id field. */
  readonly worker: number;
  /** The sequence within the time unit. */
  readonly sequence: number;
}

/** What {@link IdLayout.decode} tells about an id. */
export interface DecodedId extends IdParts {
  /** The id itself. */
  readonly id: bigint;
  /** Start of the id's time unit, in ms since 1970. */
  readonly timestampMs: number;
  /** `timestampMs` as a Date. */
  readonly date: Date;
}

/** A validated layout. Immutable; share one between generators and decoders. */
export class IdLayout {
  /** Bits of the time field. */
  readonly timeBits: number;
  /** Bits of the worker field. */
  readonly workerBits: number;
  /** Bits of the sequence field. */
  readonly sequenceBits: number;
  /** Epoch of the time field, in ms since 1970 (UTC). */
  readonly epochMs: number;
  /** Length of one time unit, in ms. */
  readonly unitMs: number;
  /** Largest time field value: 2^timeBits - 1. */
  readonly maxTime: number;
  /** Largest worker id: 2^workerBits - 1. */
  readonly maxWorker: number;
  /** Largest sequence: 2^sequenceBits - 1. */
  readonly maxSequence: number;
  /** The first ms (since 1970) this layout cannot represent: epoch + 2^timeBits units. */
  readonly endMs: number;
  /** @internal shifts as bigints, for the hot path */
  readonly timeShift: bigint;
  /** @internal */
  readonly workerShift: bigint;

  /** The default layout: 41 bits of ms / 10 bits of worker / 12 bits of sequence, from 2026-01-01. */
  static readonly DEFAULT = new IdLayout();

  constructor(options: LayoutOptions = {}) {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('layout must be an object.');
    let { timeBits, workerBits, sequenceBits } = options;
    for (const [name, v] of [['timeBits', timeBits], ['workerBits', workerBits], ['sequenceBits', sequenceBits]] as const) {
      if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < 0)) {
        throw new OutOfRangeError(name, `${name} must be a whole number of bits, got ${String(v)}.`);
      }
    }
    // Fill the gaps: one missing field is what the other two leave; with more missing, sequence
    // defaults to 12, then worker to 10 (unless time is given), and the last one takes what is left.
    const missing = [timeBits, workerBits, sequenceBits].filter((v) => v === undefined).length;
    if (missing >= 2) {
      sequenceBits ??= 12;
      if (timeBits === undefined && workerBits === undefined) workerBits = 10;
    }
    timeBits ??= 63 - (workerBits ?? 0) - (sequenceBits ?? 0);
    workerBits ??= 63 - timeBits - (sequenceBits ?? 0);
    sequenceBits ??= 63 - timeBits - workerBits;
    if (timeBits + workerBits + sequenceBits !== 63) {
      throw new OutOfRangeError(
        'timeBits',
        `timeBits + workerBits + sequenceBits must be 63 (ids are positive int64), got ${timeBits} + ${workerBits} + ${sequenceBits}.`,
      );
    }
    if (timeBits < 1 || timeBits > 52) throw new OutOfRangeError('timeBits', `timeBits must be from 1 to 52, got ${timeBits}.`);
    if (workerBits < 0 || workerBits > 31) throw new OutOfRangeError('workerBits', `workerBits must be from 0 to 31, got ${workerBits}.`);
    if (sequenceBits < 0 || sequenceBits > 31) {
      throw new OutOfRangeError('sequenceBits', `sequenceBits must be from 0 to 31, got ${sequenceBits}.`);
    }
    const epoch = options.epochMs instanceof Date ? options.epochMs.getTime() : options.epochMs ?? DEFAULT_EPOCH_MS;
    if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch) || epoch < 0) {
      throw new OutOfRangeError('epochMs', `epochMs must be a whole number of ms since 1970 (or a valid Date), got ${String(epoch)}.`);
    }
    const unit = options.unitMs ?? 1;
    if (typeof unit !== 'number' || !Number.isSafeInteger(unit) || unit < 1 || unit > 86_400_000) {
      throw new OutOfRangeError('unitMs', `unitMs must be a whole number of ms from 1 to 86,400,000, got ${String(unit)}.`);
    }
    const endMs = epoch + 2 ** timeBits * unit;
    if (endMs > MAX_DATE_MS) {
      throw new OutOfRangeError(
        'timeBits',
        `This layout would reach past the year 275760 (the end of JS dates): use fewer timeBits or a shorter unitMs (epoch ${epoch}, ${timeBits} bits of ${unit} ms).`,
      );
    }
    this.timeBits = timeBits;
    this.workerBits = workerBits;
    this.sequenceBits = sequenceBits;
    this.epochMs = epoch;
    this.unitMs = unit;
    this.maxTime = 2 ** timeBits - 1;
    this.maxWorker = 2 ** workerBits - 1;
    this.maxSequence = 2 ** sequenceBits - 1;
    this.endMs = endMs;
    this.timeShift = BigInt(workerBits + sequenceBits);
    this.workerShift = BigInt(sequenceBits);
    Object.freeze(this);
  }

  /** The layout `spec` describes: an IdLayout as is, options validated, undefined the default. */
  static from(spec: IdLayout | LayoutOptions | undefined): IdLayout {
    if (spec === undefined) return IdLayout.DEFAULT;
    return spec instanceof IdLayout ? spec : new IdLayout(spec);
  }

  /** Compose an id. Each field is range-checked. */
  encode(parts: IdParts): bigint {
    const { time, worker, sequence } = parts;
    checkField('time', time, this.maxTime);
    checkField('worker', worker, this.maxWorker);
    checkField('sequence', sequence, this.maxSequence);
    return (BigInt(time) << this.timeShift) | (BigInt(worker) << this.workerShift) | BigInt(sequence);
  }

  /** Split an id (bigint, or its decimal string) into its fields and its time. */
  decode(id: bigint | string): DecodedId {
    const v = parseId(id);
    const time = Number(v >> this.timeShift);
    const worker = Number((v >> this.workerShift) & BigInt(this.maxWorker));
    const sequence = Number(v & BigInt(this.maxSequence));
    const timestampMs = this.epochMs + time * this.unitMs;
    return { id: v, time, worker, sequence, timestampMs, date: new Date(timestampMs) };
  }

  /** The time unit `ms` (since 1970) falls in; negative before the epoch. */
  unitOf(ms: number): number {
    return Math.floor((ms - this.epochMs) / this.unitMs);
  }

  /** Start of time unit `time`, in ms since 1970. */
  msOf(time: number): number {
    return this.epochMs + time * this.unitMs;
  }

  /** Smallest id whose time unit starts at or after `ms` (for range queries by time); 0n before the epoch. */
  firstIdAt(ms: number): bigint {
    const t = Math.max(0, Math.ceil((ms - this.epochMs) / this.unitMs));
    if (t > this.maxTime) return MAX_ID;
    return BigInt(t) << this.timeShift;
  }

  /** "41/10/12 from 2026-01-01T00:00:00.000Z in 1 ms units" */
  toString(): string {
    return `${this.timeBits}/${this.workerBits}/${this.sequenceBits} from ${new Date(this.epochMs).toISOString()} in ${this.unitMs} ms units`;
  }

  /** Plain options that rebuild this layout (JSON-safe). */
  toJSON(): Required<Omit<LayoutOptions, 'epochMs'>> & {
    /** Epoch in ms since 1970 (UTC). */
    epochMs: number;
  } {
    return {
      timeBits: this.timeBits,
      workerBits: this.workerBits,
      sequenceBits: this.sequenceBits,
      epochMs: this.epochMs,
      unitMs: this.unitMs,
    };
  }
}

/** An id as a bigint in [0, 2^63), from a bigint or a decimal string. */
export function parseId(id: bigint | string): bigint {
  let v: bigint;
  if (typeof id === 'bigint') v = id;
  else if (typeof id === 'string' && /^\s*\d{1,19}\s*$/.test(id)) v = BigInt(id.trim());
  else if (typeof id === 'string') throw new InvalidArgumentError(`An id must be a decimal string of up to 19 digits, got "${id.slice(0, 40)}".`);
  else throw new InvalidArgumentError(`An id must be a bigint or a decimal string, got ${typeof id}.`);
  if (v < 0n || v > MAX_ID) throw new OutOfRangeError('id', `An id must be from 0 to 2^63-1, got ${v}.`);
  return v;
}

function checkField(name: string, v: number, max: number): void {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max) {
    throw new OutOfRangeError(name, `${name} must be a whole number from 0 to ${max}, got ${String(v)}.`);
  }
}
