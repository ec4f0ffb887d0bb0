import type * as z from 'zod/mini';
import { useEffect, useState } from 'preact/hooks';
import { getJson } from './api.js';

/** What a polled API answered last, and the one line of the last failure (cleared by the next success). */
export interface Polled<T> {
  data: T | undefined;
  error: string | undefined;
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
          const data = await getJson(path, schema);
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
