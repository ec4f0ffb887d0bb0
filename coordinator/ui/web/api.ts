/**
 * The page's side of the HTTP API (coordinator/ui/server.ts): the JSON shapes it answers and one
 * shared event stream. The cookie set at login goes with every request; nothing here holds a token.
 */

export type RunStatus = 'submitted' | 'running' | 'stopping' | 'done' | 'failed' | 'stopped';

/** One line of the runs table; null where unknown. */
export interface RunRow {
  runName: string;
  workflow: string;
  status: RunStatus;
  attempt: number | null;
  maxAttempts: number;
  owner: string | null;
  submittedAt: string;
  durationMs: number | null;
  instance: string | null;
  costUsd: number | null;
  tag: string | null;
}

export interface RunsPage {
  runs: RunRow[];
  total: number;
  page: number;
  pageSize: number;
  workflows: string[];
}

export interface Attempt {
  attempt: number;
  agent: string;
  host: string;
  instance: string | null;
  market: 'spot' | 'on-demand' | null;
  startedAt: string;
  endedAt: string | null;
  reason: string | null;
  exitCode: number | null;
}

export interface RunDetail {
  run: RunRow;
  spec: Record<string, unknown>;
  overrides: string[];
  restartOf: string | null;
  stopRequested: boolean;
  code: { commit: string | null; branch: string | null; diff: string; diffCut: boolean };
  deps: Array<{ kind: 'workflow' | 'tag'; name: string; runName: string | null; artifacts: string[] }>;
  dependents: string[];
  attempts: Attempt[];
  links: Array<{ kind: string; port: number; url: string }>;
  artifacts: Array<{ index: number; path: string; files: number; sizeBytes: number }>;
  artifactsComplete: boolean;
}

export interface LogRecord {
  atMs: number;
  stream: 'out' | 'err';
  text: string;
}

export interface LogsAnswer {
  records: LogRecord[];
  cursor: string | null;
  done: boolean;
}

export interface TreeEntry {
  path: string;
  type: 'file' | 'dir' | 'symlink';
  sizeBytes: number;
}

export interface ActionAnswer {
  ok: boolean;
  message: string;
  runName?: string | null;
}

/** An answer other than 2xx, with the server's one line. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function parse<T>(res: Response): Promise<T> {
  const body: unknown = await res.json().catch(() => ({}));
  if (!res.ok) {
    const message = typeof body === 'object' && body !== null && 'error' in body && typeof body.error === 'string' ? body.error : `HTTP ${res.status}`;
    throw new ApiError(res.status, message);
  }
  return body as T;
}

/** GETs an API path and parses its JSON. */
export async function getJson<T>(path: string): Promise<T> {
  return parse<T>(await fetch(path, { credentials: 'same-origin', cache: 'no-store' }));
}

/** POSTs JSON to an API path. */
export async function postJson<T>(path: string, body: unknown): Promise<T> {
  return parse<T>(await fetch(path, { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }));
}

/** A path segment for a URL. */
export const seg = encodeURIComponent;

type Listener = (data: { version?: number; runName?: string }) => void;
const listeners = { runs: new Set<Listener>(), run: new Set<Listener>() };
let source: EventSource | undefined;

/**
 * Listens to the server's events (`runs`: the list changed; `run`: one run changed) over one
 * EventSource for the whole page; returns the unsubscribe function.
 */
export function onEvent(kind: 'runs' | 'run', listener: Listener): () => void {
  if (!source) {
    source = new EventSource('/api/events');
    for (const k of ['runs', 'run'] as const) {
      source.addEventListener(k, (e) => {
        let data: { version?: number; runName?: string } = {};
        try {
          data = JSON.parse((e as MessageEvent<string>).data) as { version?: number; runName?: string };
        } catch {
          // A malformed event is only a hint to refetch: it still triggers one.
        }
        for (const l of listeners[k]) l(data);
      });
    }
  }
  listeners[kind].add(listener);
  return () => listeners[kind].delete(listener);
}
