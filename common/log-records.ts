import { z } from 'zod';

/** One piece of a job's output as stored: when it arrived (epoch ms), on which stream, and its exact bytes. */
export interface LogRecord {
  atMs: number;
  s: 'out' | 'err';
  d: Buffer;
}

/**
 * A stored log chunk, version 1: the magic `DSL\x01`, then frames of
 * `stream (1 byte: 1 out, 2 err) | atMs (6 bytes, big-endian) | length (4 bytes, big-endian) | bytes`.
 * Job output is kept byte for byte at 11 bytes per frame; a frame holds one or more pipe reads.
 * Chunks written before bytes were kept are JSON lines (`{"t":ISO,"s":"out","d":text}`), and start with `{`.
 */
export const LOG_CHUNK_MAGIC = Buffer.from('DSL\x01', 'latin1');
const FRAME_HEADER_BYTES = 11;
const STREAM_BYTE = { out: 1, err: 2 } as const;

/** Encodes records into one chunk. */
export function encodeLogChunk(records: readonly LogRecord[]): Buffer {
  const parts: Buffer[] = [LOG_CHUNK_MAGIC];
  for (const r of records) {
    const header = Buffer.alloc(FRAME_HEADER_BYTES);
    header.writeUInt8(STREAM_BYTE[r.s], 0);
    header.writeUIntBE(Math.max(0, Math.round(r.atMs)), 1, 6);
    header.writeUInt32BE(r.d.length, 7);
    parts.push(header, r.d);
  }
  return Buffer.concat(parts);
}

/** What a chunk holds: every record read before a problem, and the problem if the chunk is damaged. */
export interface ParsedLogChunk {
  records: LogRecord[];
  /** Set when the chunk is corrupt; `records` then holds what came before the damage. */
  problem?: string;
}

/** Decodes a stored chunk in either format, never throwing: a damaged chunk gives what precedes the damage and a problem. */
export function parseLogChunk(body: Buffer): ParsedLogChunk {
  if (body.length >= LOG_CHUNK_MAGIC.length && body.subarray(0, LOG_CHUNK_MAGIC.length).equals(LOG_CHUNK_MAGIC)) return parseFrames(body);
  if (body.length > 0 && body[0] === 0x7b /* { */) return parseJsonLines(body);
  return { records: [], problem: 'not a dstack log chunk (unknown header)' };
}

function parseFrames(body: Buffer): ParsedLogChunk {
  const records: LogRecord[] = [];
  let at = LOG_CHUNK_MAGIC.length;
  while (at < body.length) {
    if (body.length - at < FRAME_HEADER_BYTES) return { records, problem: `truncated frame header at byte ${at}` };
    const streamByte = body.readUInt8(at);
    const s = streamByte === STREAM_BYTE.out ? 'out' : streamByte === STREAM_BYTE.err ? 'err' : undefined;
    if (s === undefined) return { records, problem: `unknown stream ${streamByte} at byte ${at}` };
    const atMs = body.readUIntBE(at + 1, 6);
    const length = body.readUInt32BE(at + 7);
    const start = at + FRAME_HEADER_BYTES;
    if (start + length > body.length) return { records, problem: `truncated frame at byte ${at}: ${length} bytes announced, ${body.length - start} stored` };
    records.push({ atMs, s, d: body.subarray(start, start + length) });
    at = start + length;
  }
  return { records };
}

/** A line of the JSON-lines chunks that agents wrote before output was kept as bytes. */
const JsonLineRecord = z.object({ t: z.string(), s: z.enum(['out', 'err']), d: z.string() });

function parseJsonLines(body: Buffer): ParsedLogChunk {
  const records: LogRecord[] = [];
  const lines = body.toString('utf8').split('\n');
  for (const [i, line] of lines.entries()) {
    if (line.length === 0) continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      return { records, problem: `line ${i + 1} is not JSON` };
    }
    const parsed = JsonLineRecord.safeParse(value);
    const atMs = parsed.success ? Date.parse(parsed.data.t) : NaN;
    if (!parsed.success || Number.isNaN(atMs)) return { records, problem: `line ${i + 1} is not a log record` };
    records.push({ atMs, s: parsed.data.s, d: Buffer.from(parsed.data.d, 'utf8') });
  }
  return { records };
}
