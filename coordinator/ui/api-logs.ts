import { parseLogChunk } from '../../common/log-records.js';
import type { Store } from '../../common/ports.js';
import { runKeys } from '../../common/runs.js';
import { HttpError } from './http.js';

/** Chunks read by one call at most: a long log arrives in several answers, each small. */
const CHUNKS_PER_CALL = 50;

/**
 * Chunk numbers looked for past a missing one. The agent's LogShipper moves on to the next number
 * when a chunk's put fails, so a hole in the numbers is not the end of the output.
 */
const GAP_CHUNKS = 3;

/**
 * One record of output as stored: its bytes in base64. The page decodes them with one streaming
 * TextDecoder per stream, so that a character split across two records is shown whole.
 */
export interface LogLineJson {
  atMs: number;
  stream: 'out' | 'err';
  data: string;
}

/** What `/api/runs/:run/logs` answers. */
export interface LogsJson {
  records: LogLineJson[];
  cursor: string | null;
  done: boolean;
}

/** A chunk's name in the run's log folder, `AAAA-SSSSSSSS.log` (attempt, sequence), as runKeys.logChunk writes it. */
const CHUNK_NAME = /^(\d{4})-(\d{8})\.log$/;

type Chunk = { key: string; body: Buffer | undefined };

/**
 * An attempt's chunks from number `seq` on, by their known names (GETs, no listing). A missing
 * chunk is looked past, up to GAP_CHUNKS numbers on: it may be one whose put failed.
 */
async function readFrom(store: Store, repoId: string, runName: string, attempt: number, seq: number): Promise<Chunk[]> {
  const found: Chunk[] = [];
  const get = async (n: number): Promise<Chunk & { n: number }> => {
    const key = runKeys.logChunk(repoId, runName, attempt, n);
    return { key, body: await store.get(key), n };
  };
  for (let n = seq; found.length < CHUNKS_PER_CALL; n++) {
    let next = await get(n);
    if (!next.body) {
      const ahead = await Promise.all(Array.from({ length: GAP_CHUNKS }, (_, i) => get(n + 1 + i)));
      const after = ahead.find((c) => c.body !== undefined);
      if (!after) break;
      next = after;
      n = after.n;
    }
    found.push({ key: next.key, body: next.body });
  }
  return found;
}

/**
 * The chunks after `after`, in order. While a run goes on, each chunk is read by its known name
 * (the agent numbers them 0, 1, 2… per attempt), from the first one of attempt 1 when there is no
 * cursor yet: GETs, no listing. When the attempt has nothing new, the later attempts that have
 * begun are looked at the same way. The log folder is listed only once the run has ended, to be
 * sure every chunk is seen.
 */
async function nextChunks(store: Store, repoId: string, runName: string, after: string | null, ended: boolean): Promise<Chunk[]> {
  const m = after === null ? null : CHUNK_NAME.exec(after);
  const attempt = m ? Number(m[1]) : 1;
  const found = await readFrom(store, repoId, runName, attempt, m ? Number(m[2]) + 1 : 0);
  if (found.length > 0) return found;
  if (ended) {
    const prefix = runKeys.logs(repoId, runName);
    const listed = await store.list(prefix, after === null ? {} : { startAfter: prefix + after });
    return listed.slice(0, CHUNKS_PER_CALL + 1).map((o) => ({ key: o.key, body: undefined }));
  }
  for (let a = attempt + 1; await store.head(runKeys.attempt(repoId, runName, a)); a++) {
    const later = await readFrom(store, repoId, runName, a, 0);
    if (later.length > 0) return later;
  }
  return [];
}

/**
 * `GET /api/runs/:run/logs?after=CURSOR`: the output stored since the cursor (the last chunk's
 * name), the next cursor, and `done` once the run has ended and every chunk is read. The agent
 * stores its last chunk before the final status, so a final status seen before the chunks are
 * looked for means that they are all there.
 */
export async function logsApi(store: Store, repoId: string, runName: string, after: string | null): Promise<LogsJson> {
  if (after !== null && !CHUNK_NAME.test(after)) throw new HttpError(400, 'not a log cursor');
  if (!(await store.head(runKeys.record(repoId, runName)))) throw new HttpError(404, `run \`${runName}\` does not exist`);
  const ended = (await store.head(runKeys.final(repoId, runName))) !== undefined;
  const prefix = runKeys.logs(repoId, runName);
  const chunks = await nextChunks(store, repoId, runName, after, ended);
  // One more than a call reads was asked for, to tell whether more are left.
  const batch = chunks.slice(0, CHUNKS_PER_CALL);
  const records: LogLineJson[] = [];
  for (const chunk of batch) {
    const body = chunk.body ?? (await store.get(chunk.key));
    if (!body) continue;
    const parsed = parseLogChunk(body);
    // Bytes, not text: a record may end inside a character that the next one finishes.
    for (const r of parsed.records) records.push({ atMs: r.atMs, stream: r.s, data: r.d.toString('base64') });
    if (parsed.problem !== undefined) {
      const note = `dstack: log chunk ${chunk.key} is corrupt (${parsed.problem}); the rest of it is skipped\n`;
      records.push({ atMs: Date.now(), stream: 'err', data: Buffer.from(note).toString('base64') });
    }
  }
  const lastKey = batch[batch.length - 1]?.key;
  const cursor = lastKey === undefined ? after : lastKey.slice(prefix.length);
  // Done only once a listing after the final status found nothing more to read.
  return { records, cursor, done: ended && batch.length === 0 };
}
