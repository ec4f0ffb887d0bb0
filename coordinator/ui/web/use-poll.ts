import { useEffect, useState } from 'preact/hooks';

/** What a polled API answered last, and the one line of the last failure (cleared by the next success). */
export interface Polled<T> {
  data: T | undefined;
  error: string | undefined;
}

/** The server's one-line error (`{error}`), else the HTTP status. */
async function failure(res: Response): Promise<string> {
  const body: unknown = await res.json().catch(() => undefined);
  return typeof body === 'object' && body !== null && 'error' in body && typeof body.error === 'string' ? body.error : `HTTP ${res.status}`;
}

/**
 * GETs `path` now and every `everyMs` (5 s) while the component is mounted, skipping turns while
 * the tab is hidden; the next fetch is armed only when the last one has ended, so they never pile
 * up behind a slow server (which lists the Store at most once a second for every tab together).
 */
export function usePoll<T>(path: string, everyMs = 5000): Polled<T> {
  const [state, setState] = useState<Polled<T>>({ data: undefined, error: undefined });
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async (): Promise<void> => {
      if (!document.hidden) {
        try {
          const res = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
          if (!res.ok) throw new Error(await failure(res));
          // Our own server's JSON, in the shape of the API module that answers it.
          const data = (await res.json()) as T;
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
  }, [path, everyMs]);
  return state;
}

/** `$0.0123` below a dollar, `$12.34` above; `-` when unknown. */
export function usd(n: number | null): string {
  if (n === null) return '-';
  return `$${Math.abs(n) < 1 ? n.toFixed(4) : n.toFixed(2)}`;
}
