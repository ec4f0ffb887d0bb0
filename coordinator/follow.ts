import { parseLogChunk, type LogRecord } from '../common/log-records.js';
import type { Store } from '../common/ports.js';
import { readJson, runKeys, type FinalRecord } from '../common/runs.js';

export interface FollowOptions {
  /** Keep polling until the run has a final status; otherwise one pass. */
  follow: boolean;
  pollMs: number;
  sinceMs?: number;
  onRecord: (record: LogRecord) => void;
  /** Called about every `tickEveryMs` while following (the CLI reconciles capacity there). */
  onTick?: () => Promise<void>;
  tickEveryMs?: number;
  /** Stops following early (Ctrl-C). */
  stopped?: Promise<void>;
}

/**
 * Prints a run's stored output in order. Following, it returns the final status once every chunk
 * written before it has been read; the agent stores the last chunk before the final status.
 */
export async function followRun(store: Store, repoId: string, runName: string, o: FollowOptions): Promise<{ final: FinalRecord | null; interrupted: boolean }> {
  const seen = new Set<string>();
  let interrupted = false;
  void o.stopped?.then(() => (interrupted = true));
  let lastTick = Date.now();
  for (;;) {
    const final = o.follow ? await readJson<FinalRecord>(store, runKeys.final(repoId, runName)) : null;
    const chunks = (await store.list(runKeys.logs(repoId, runName))).filter((c) => !seen.has(c.key));
    for (const chunk of chunks) {
      seen.add(chunk.key);
      const body = await store.get(chunk.key);
      if (!body) continue;
      for (const record of parseLogChunk(body.toString('utf8'))) {
        if (o.sinceMs === undefined || Date.parse(record.t) >= o.sinceMs) o.onRecord(record);
      }
    }
    if (!o.follow) return { final: await readJson<FinalRecord>(store, runKeys.final(repoId, runName)), interrupted };
    if (final) return { final, interrupted };
    if (interrupted) return { final: null, interrupted };
    if (o.onTick && Date.now() - lastTick >= (o.tickEveryMs ?? 2000)) {
      lastTick = Date.now();
      await o.onTick();
    }
    await Promise.race([new Promise((r) => setTimeout(r, o.pollMs)), o.stopped]);
  }
}
