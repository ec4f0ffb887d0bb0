import { parseLogChunk } from '../../common/log-records.js';
import type { Store } from '../../common/ports.js';
import { runKeys } from '../../common/runs.js';
import { HttpError } from './http.js';

/** Chunks read by one call at most: a long log arrives in several answers, each small. */
const CHUNKS_PER_CALL = 50;

/** One piece of output as the page shows it: decoded text, never markup. */
export interface LogLineJson {
  atMs: number;
  stream: 'out' | 'err';
  text: string;
}

/** A chunk's name in the run's log folder, `AAAA-SSSSSSSS.log` (attempt, sequence), as runKeys.logChunk writes it. */
const CHUNK_NAME = /^(\d{4})-(\d{8})\.log$/;

/**
 * The chunks after `after`, in order. While a run goes on, the next chunk is read by its known
 * name (the agent numbers them 0, 1, 2… per attempt): a GET, no listing. The log folder is listed
 * only to start, when the run has ended (to be sure every chunk is seen), or when a next attempt
 * has begun (whose first chunk may be any number of attempts later).
 */
async function nextChunks(store: Store, repoId: string, runName: string, after: string | null, ended: boolean): Promise<Array<{ key: string; body: Buffer | undefined }>> {
  const prefix = runKeys.logs(repoId, runName);
  const m = after === null ? null : CHUNK_NAME.exec(after);
  if (m) {
    const attempt = Number(m[1]);
    const found: Array<{ key: string; body: Buffer | undefined }> = [];
    for (let seq = Number(m[2]) + 1; found.length < CHUNKS_PER_CALL; seq++) {
      const key = runKeys.logChunk(repoId, runName, attempt, seq);
      const body = await store.get(key);
      if (!body) break;
      found.push({ key, body });
    }
    if (found.length > 0) return found;
    if (!ended && !(await store.head(runKeys.attempt(repoId, runName, attempt + 1)))) return [];
  }
  const listed = await store.list(prefix, after === null ? {} : { startAfter: prefix + after });
  return listed.slice(0, CHUNKS_PER_CALL + 1).map((o) => ({ key: o.key, body: undefined }));
}

/**
 * `GET /api/runs/:run/logs?after=CURSOR`: the output stored since the cursor (the last chunk's
 * name), the next cursor, and `done` once the run has ended and every chunk is read. The agent
 * stores its last chunk before the final status, so a final status seen before the chunks are
 * looked for means that they are all there.
 */
export async function logsApi(store: Store, repoId: string, runName: string, after: string | null): Promise<{ records: LogLineJson[]; cursor: string | null; done: boolean }> {
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
    for (const r of parsed.records) records.push({ atMs: r.atMs, stream: r.s, text: r.d.toString('utf8') });
    if (parsed.problem !== undefined) records.push({ atMs: Date.now(), stream: 'err', text: `dstack: log chunk ${chunk.key} is corrupt (${parsed.problem}); the rest of it is skipped\n` });
  }
  const lastKey = batch[batch.length - 1]?.key;
  const cursor = lastKey === undefined ? after : lastKey.slice(prefix.length);
  // Done only once a listing after the final status found nothing more to read.
  return { records, cursor, done: ended && batch.length === 0 };
}
