/**
 * The page's side of the HTTP API (coordinator/ui/server.ts): every answer parsed with its schema
 * (schemas.ts), and one shared event stream. Paths are relative (`api/runs`): the page lives at
 * the server's secret prefix (`/s/<P>/`), and so does the API. The cookie set at login goes with
 * every request; nothing here holds a token.
 */
import type { z } from 'zod/mini';
import { ErrorAnswerSchema, EventDataSchema, type EventData } from './schemas.js';

export type { ActionAnswer, Attempt, LogRecord, LogsJson, RunDetail, RunRow, RunsPage, RunStatus, TreeEntry } from './schemas.js';

/** An answer other than 2xx, with the server's one line. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * `value` checked against `schema`; else an error whose one line names the first field that
 * differs (a page and a server of different builds).
 */
export function parseWith<T>(schema: z.ZodMiniType<T>, value: unknown, what: string): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  // zod/mini carries no message texts: a wrong type is said from the issue itself.
  const said = issue === undefined ? 'invalid' : issue.code === 'invalid_type' ? `expected ${issue.expected}` : issue.message;
  throw new Error(`unexpected answer from ${what}: ${issue?.path.join('.') || '(root)'}: ${said}`);
}

async function parse<T>(res: Response, schema: z.ZodMiniType<T>, path: string): Promise<T> {
  const body: unknown = await res.json().catch(() => ({}));
  if (!res.ok) {
    const error = ErrorAnswerSchema.safeParse(body);
    throw new ApiError(res.status, error.success ? error.data.error : `HTTP ${res.status}`);
  }
  return parseWith(schema, body, path.split('?')[0] ?? path);
}

/** GETs an API path (relative: `api/runs`) and parses its JSON with the endpoint's schema. */
export async function getJson<T>(path: string, schema: z.ZodMiniType<T>): Promise<T> {
  return parse(await fetch(path, { credentials: 'same-origin', cache: 'no-store' }), schema, path);
}

/** POSTs JSON to an API path (relative) and parses the answer with the endpoint's schema. */
export async function postJson<T>(path: string, body: unknown, schema: z.ZodMiniType<T>): Promise<T> {
  return parse(await fetch(path, { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }), schema, path);
}

/** A path segment for a URL. */
export const seg = encodeURIComponent;

type Listener = (data: EventData) => void;
const listeners = { runs: new Set<Listener>(), run: new Set<Listener>() };
let source: EventSource | undefined;

/**
 * Listens to the server's events (`runs`: the list changed; `run`: one run changed) over one
 * EventSource for the whole page; returns the unsubscribe function.
 */
export function onEvent(kind: 'runs' | 'run', listener: Listener): () => void {
  if (!source) {
    source = new EventSource('api/events');
    for (const k of ['runs', 'run'] as const) {
      source.addEventListener(k, (e) => {
        let data: EventData = {};
        try {
          const raw: unknown = e instanceof MessageEvent ? JSON.parse(String(e.data)) : {};
          data = EventDataSchema.parse(raw);
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
