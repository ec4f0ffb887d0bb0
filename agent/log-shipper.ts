import { encodeLogChunk, type LogRecord } from '../common/log-records.js';
import type { Store } from '../common/ports.js';
import { Masker } from './secrets.js';

/**
 * Stores a job's stdout and stderr as log chunks in the Store, byte for byte and in arrival order,
 * flushing every `flushMs` (or sooner when the buffer passes `maxBufferBytes`), so readers stay
 * under a second behind. Output is never decoded here: a character split across two pipe reads
 * is stored as the job wrote it. Once `mask` is called, each secret value is stored as `***`.
 */
export class LogShipper {
  private buffer: LogRecord[] = [];
  /** Pieces of the last record, joined when it is closed: consecutive writes to one stream share a frame. */
  private open: { atMs: number; s: 'out' | 'err'; parts: Buffer[] } | undefined;
  private bufferedBytes = 0;
  private seq = 0;
  private chain: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private failure: unknown;
  private maskers: { out: Masker; err: Masker } | undefined;

  constructor(
    private readonly store: Store,
    private readonly keyFor: (seq: number) => string,
    private readonly flushMs = 200,
    private readonly maxBufferBytes = 256 * 1024,
  ) {}

  /** From now on, every write (the job's and dstack's own lines) has these values replaced by `***`. */
  mask(values: Iterable<string>): void {
    const list = [...values];
    this.maskers = { out: new Masker(list), err: new Masker(list) };
  }

  /** Masks one more value from now on (a credential dstack made for the run), keeping what is held back. */
  addMask(value: string): void {
    if (!this.maskers) this.mask([]);
    this.maskers?.out.add(value);
    this.maskers?.err.add(value);
  }

  /** The output has ended: the bytes each masker held back (a possible start of a value) are stored. */
  endOutput(): void {
    const maskers = this.maskers;
    if (!maskers) return;
    this.maskers = undefined;
    this.append('out', maskers.out.end());
    this.append('err', maskers.err.end());
  }

  /** Buffers output; a string (dstack's own lines) is stored as UTF-8, a Buffer as it is. */
  write(stream: 'out' | 'err', data: Buffer | string): void {
    // Copied: a stream may reuse the Buffer it handed out.
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
    this.append(stream, this.maskers ? this.maskers[stream].write(bytes) : bytes);
  }

  private append(stream: 'out' | 'err', bytes: Buffer): void {
    if (bytes.length === 0) return;
    if (this.open?.s !== stream) {
      this.closeRecord();
      this.open = { atMs: Date.now(), s: stream, parts: [] };
    }
    this.open.parts.push(bytes);
    this.bufferedBytes += bytes.length;
    if (this.bufferedBytes >= this.maxBufferBytes) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.flushMs);
  }

  private closeRecord(): void {
    if (!this.open) return;
    const { atMs, s, parts } = this.open;
    this.buffer.push({ atMs, s, d: parts.length === 1 && parts[0] ? parts[0] : Buffer.concat(parts) });
    this.open = undefined;
  }

  /** Writes what is buffered; resolves when every earlier flush has been stored. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.closeRecord();
    if (this.buffer.length > 0) {
      const records = this.buffer;
      this.buffer = [];
      this.bufferedBytes = 0;
      const key = this.keyFor(this.seq++);
      const body = encodeLogChunk(records);
      this.chain = this.chain.then(() => this.store.put(key, body)).catch((e: unknown) => {
        this.failure ??= e;
      });
    }
    return this.chain;
  }

  /** Flushes the rest; rejects if any chunk could not be stored. */
  async close(): Promise<void> {
    this.endOutput();
    await this.flush();
    if (this.failure !== undefined) throw this.failure;
  }
}
