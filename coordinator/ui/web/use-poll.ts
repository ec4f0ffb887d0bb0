import * as z from 'zod/mini';
import { useEffect, useState } from 'preact/hooks';

/** What a polled API answered last, and the one line of the last failure (cleared by the next success). */
export interface Polled<T> {
  data: T | undefined;
  error: string | undefined;
}

/** The server's one-line error (`{error}`), else the HTTP status. */
async function failure(res: Response): Promise<string> {
  const body: unknown = await res.json().catch(() => undefined);
  const parsed = z.object({ error: z.string() }).safeParse(body);
  return parsed.success ? parsed.data.error : `HTTP ${res.status}`;
}

/** GETs a path (relative: the app lives under a per-server prefix) and parses its JSON with `schema`. */
export async function getParsed<T>(path: string, schema: z.ZodMiniType<T>): Promise<T> {
  const res = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
  if (!res.ok) throw new Error(await failure(res));
  const parsed = schema.safeParse(await res.json());
  if (!parsed.success) throw new Error(`unexpected answer from ${path.split('?')[0] ?? path}: ${parsed.error.issues[0]?.message ?? 'wrong shape'}`);
  return parsed.data;
}

/**
 * GETs `path` (relative, `api/…`) now and every `everyMs` (5 s) while the component is mounted,
 * parsing each answer with `schema`; turns are skipped while the tab is hidden, and the next fetch
 * is armed only when the last one has ended, so they never pile up behind a slow server (which
 * lists the Store at most once a second for every tab together).
 */
export function usePoll<T>(path: string, schema: z.ZodMiniType<T>, everyMs = 5000): Polled<T> {
  const [state, setState] = useState<Polled<T>>({ data: undefined, error: undefined });
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async (): Promise<void> => {
      if (!document.hidden) {
        try {
          const data = await getParsed(path, schema);
          if (!stopped) setState({ data, error: undefined });
        } catch (e) {
          if (!stopped) setState((s) => ({ data: s.data, error: e instanceof Error ? e.message : String(e) }));
        }
      }
      if (!stopped) timer = setTimeout(() => void load(), everyMs);
    };
    void load();
    return () => {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
    };
  }, [path, schema, everyMs]);
  return state;
}
