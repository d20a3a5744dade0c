import cliProgress from 'cli-progress';

/** Live progress of a run on stderr: a bar on a TTY, a plain line every ~500 ms otherwise. */
export interface ProgressView {
  start(total: number): void;
  update(done: number, orders: number): void;
  stop(): void;
}

export function createProgressView(mode: 'tty' | 'lines' | 'none', stream: NodeJS.WriteStream): ProgressView {
  if (mode === 'none') return { start() {}, update() {}, stop() {} };
  if (mode === 'tty') return new BarView(stream);
  return new LineView(stream);
}

class BarView implements ProgressView {
  private readonly bar: cliProgress.SingleBar;
  private active = false;
  constructor(stream: NodeJS.WriteStream) {
    this.bar = new cliProgress.SingleBar(
      {
        stream,
        format: 'flash sale |{bar}| {value}/{total} buyers | orders {orders} | {duration_formatted}',
        hideCursor: true,
        clearOnComplete: false,
        fps: 10,
      },
      cliProgress.Presets.shades_classic,
    );
  }
  start(total: number): void {
    this.bar.start(total, 0, { orders: 0 });
    this.active = true;
  }
  update(done: number, orders: number): void {
    if (this.active) this.bar.update(done, { orders });
  }
  stop(): void {
    if (!this.active) return;
    this.active = false;
    this.bar.stop();
  }
}

class LineView implements ProgressView {
  private timer: NodeJS.Timeout | undefined;
  private total = 0;
  private done = 0;
  private orders = 0;
  private startedAt = 0;
  private last = '';
  constructor(private readonly stream: NodeJS.WriteStream) {}
  start(total: number): void {
    this.total = total;
    this.startedAt = performance.now();
    this.timer = setInterval(() => this.print(), 500);
    this.timer.unref();
  }
  update(done: number, orders: number): void {
    this.done = done;
    this.orders = orders;
  }
  stop(): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
    this.print();
  }
  private print(): void {
    const line = `flash sale: ${this.done}/${this.total} buyers done, orders ${this.orders}`;
    if (line === this.last) return;
    this.last = line;
    const s = ((performance.now() - this.startedAt) / 1000).toFixed(1);
    this.stream.write(`${line} (${s}s)\n`);
  }
}
