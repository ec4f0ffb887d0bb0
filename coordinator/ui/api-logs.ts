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

/**
 * `GET /api/runs/:run/logs?after=CURSOR`: the output stored since the cursor (the last chunk's
 * name), the next cursor, and `done` once the run has ended and every chunk is read. The agent
 * stores its last chunk before the final status, so a final status seen before the listing means
 * the listing holds every chunk.
 */
export async function logsApi(store: Store, repoId: string, runName: string, after: string | null): Promise<{ records: LogLineJson[]; cursor: string | null; done: boolean }> {
  if (after !== null && !/^\d{4}-\d{8}\.log$/.test(after)) throw new HttpError(400, 'not a log cursor');
  if (!(await store.head(runKeys.record(repoId, runName)))) throw new HttpError(404, `run \`${runName}\` does not exist`);
  const ended = (await store.head(runKeys.final(repoId, runName))) !== undefined;
  const prefix = runKeys.logs(repoId, runName);
  // Chunk names sort by attempt then sequence: what comes after the cursor is what is new.
  // TODO(merge): Store.list(prefix, { startAfter: prefix + after }) lists only the new keys.
  const fresh = (await store.list(prefix)).filter((o) => after === null || o.key.slice(prefix.length) > after);
  const batch = fresh.slice(0, CHUNKS_PER_CALL);
  const records: LogLineJson[] = [];
  for (const chunk of batch) {
    const body = await store.get(chunk.key);
    if (!body) continue;
    const parsed = parseLogChunk(body);
    for (const r of parsed.records) records.push({ atMs: r.atMs, stream: r.s, text: r.d.toString('utf8') });
    if (parsed.problem !== undefined) records.push({ atMs: Date.now(), stream: 'err', text: `dstack: log chunk ${chunk.key} is corrupt (${parsed.problem}); the rest of it is skipped\n` });
  }
  const lastKey = batch[batch.length - 1]?.key;
  return { records, cursor: lastKey === undefined ? after : lastKey.slice(prefix.length), done: ended && batch.length === fresh.length };
}
