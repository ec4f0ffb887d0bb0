import { parseLogChunk, type LogRecord } from '../common/log-records.js';
import type { Store } from '../common/ports.js';
import { CorruptRecordError } from '../common/records/read.js';
import { FinalRecordSchema } from '../common/records/runs.js';
import { readJson, runKeys, type FinalRecord } from '../common/runs.js';

export interface FollowOptions {
  /** Keep polling until the run has a final status; otherwise one pass. */
  follow: boolean;
  pollMs: number;
  sinceMs?: number;
  /** Gets the job's output, bytes as stored, and dstack's own `dstack: …` lines on `err`; a promise it returns is awaited (backpressure). */
  onRecord: (record: LogRecord) => unknown;
  /** Called about every `tickEveryMs` while following (the CLI reconciles capacity there). */
  onTick?: () => Promise<void>;
  tickEveryMs?: number;
  /** Stops following early (Ctrl-C). */
  stopped?: Promise<void>;
}

/**
 * Prints a run's stored output in order. Following, it returns the final status once every chunk
 * written before it has been read; the agent stores the last chunk before the final status.
 * A damaged chunk gives what precedes the damage and one `dstack:` line naming it, and the chunks
 * after it are still read. A damaged final status ends a follow with CorruptRecordError, once all
 * output is printed; without follow it is one `dstack:` line.
 */
export async function followRun(store: Store, repoId: string, runName: string, o: FollowOptions): Promise<{ final: FinalRecord | null; interrupted: boolean }> {
  const seen = new Set<string>();
  let interrupted = false;
  void o.stopped?.then(() => (interrupted = true));
  let lastTick = Date.now();
  const say = (line: string): unknown => o.onRecord({ atMs: Date.now(), s: 'err', d: Buffer.from(`dstack: ${line}\n`, 'utf8') });
  const readFinal = async (): Promise<FinalRecord | CorruptRecordError | null> => {
    try {
      return await readJson(store, runKeys.final(repoId, runName), FinalRecordSchema);
    } catch (e) {
      if (e instanceof CorruptRecordError) return e;
      throw e;
    }
  };
  for (;;) {
    const final = o.follow ? await readFinal() : null;
    const chunks = (await store.list(runKeys.logs(repoId, runName))).filter((c) => !seen.has(c.key));
    for (const chunk of chunks) {
      seen.add(chunk.key);
      const body = await store.get(chunk.key);
      if (!body) continue;
      const { records, problem } = parseLogChunk(body);
      for (const record of records) {
        // Awaited: a reader slower than the store holds the next chunk back, so memory stays bounded.
        if (o.sinceMs === undefined || record.atMs >= o.sinceMs) await o.onRecord(record);
      }
      if (problem !== undefined) await say(`log chunk ${chunk.key} is corrupt (${problem}); the rest of it is skipped`);
    }
    if (!o.follow) {
      const last = await readFinal();
      if (last instanceof CorruptRecordError) await say(last.message);
      return { final: last instanceof CorruptRecordError ? null : last, interrupted };
    }
    if (final instanceof CorruptRecordError) throw final;
    if (final) return { final, interrupted };
    if (interrupted) return { final: null, interrupted };
    if (o.onTick && Date.now() - lastTick >= (o.tickEveryMs ?? 2000)) {
      lastTick = Date.now();
      await o.onTick();
    }
    await Promise.race([new Promise((r) => setTimeout(r, o.pollMs)), o.stopped]);
  }
}
