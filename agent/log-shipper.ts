import type { LogRecord } from '../common/log-records.js';
import type { Store } from '../common/ports.js';

/**
 * Batches a job's stdout and stderr into JSON-lines chunks in the Store, in arrival order,
 * flushing every `flushMs` (or sooner when the buffer grows), so readers stay under a second behind.
 */
export class LogShipper {
  private buffer: LogRecord[] = [];
  private bufferedBytes = 0;
  private seq = 0;
  private chain: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private failure: unknown;

  constructor(
    private readonly store: Store,
    private readonly keyFor: (seq: number) => string,
    private readonly flushMs = 200,
    private readonly maxBufferBytes = 256 * 1024,
  ) {}

  write(stream: 'out' | 'err', data: Buffer | string): void {
    const d = typeof data === 'string' ? data : data.toString('utf8');
    this.buffer.push({ t: new Date().toISOString(), s: stream, d });
    this.bufferedBytes += d.length;
    if (this.bufferedBytes >= this.maxBufferBytes) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.flushMs);
  }

  /** Writes what is buffered; resolves when every earlier flush has been stored. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.buffer.length > 0) {
      const records = this.buffer;
      this.buffer = [];
      this.bufferedBytes = 0;
      const key = this.keyFor(this.seq++);
      const body = records.map((r) => JSON.stringify(r)).join('\n') + '\n';
      this.chain = this.chain.then(() => this.store.put(key, body)).catch((e: unknown) => {
        this.failure ??= e;
      });
    }
    return this.chain;
  }

  /** Flushes the rest; rejects if any chunk could not be stored. */
  async close(): Promise<void> {
    await this.flush();
    if (this.failure !== undefined) throw this.failure;
  }
}
