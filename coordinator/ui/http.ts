import type { IncomingMessage, ServerResponse } from 'node:http';
import { ArtifactError } from '../../common/artifacts/manifest.js';
import { ConflictError, NotFoundError, UsageError } from '../../common/errors.js';

/** An answer other than 200: its status and one line for the user. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** What a route handler gets: the request, its URL, the path's captured groups and the JSON body of a POST. */
export interface RouteRequest {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  params: string[];
  body: () => Promise<Record<string, unknown>>;
}

/** Returned by a handler that has written the response itself (a download, a stream). */
export const HANDLED = Symbol('handled');

/** A handler returns the JSON to send (status 200), or HANDLED; it throws HttpError (or a DstackError) for an error. */
export type Handler = (r: RouteRequest) => Promise<unknown>;

/** One entry of the route table: the method and a pattern over the path (decoded groups become params). */
export interface Route {
  method: 'GET' | 'POST';
  path: RegExp;
  handle: Handler;
}

/** The HTTP status of an error thrown by a handler: the user's mistakes are 4xx, the rest 500. */
export function statusOf(e: Error): number {
  if (e instanceof HttpError) return e.status;
  if (e instanceof NotFoundError) return 404;
  if (e instanceof ConflictError) return 409;
  if (e instanceof UsageError) return 400;
  if (e instanceof ArtifactError) return 400;
  return 500;
}

/** Writes a JSON answer; nothing is cached (the runs change under the page). */
export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'x-content-type-options': 'nosniff', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** A POST's JSON body (at most 64 KiB); an empty body is `{}`. */
export async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of req) {
    const b = part as Buffer;
    size += b.length;
    if (size > 65_536) throw new HttpError(413, 'request body too large');
    parts.push(b);
  }
  const text = Buffer.concat(parts).toString('utf8').trim();
  if (text === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new HttpError(400, 'the request body is not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new HttpError(400, 'the request body must be a JSON object');
  return value as Record<string, unknown>;
}

/** A run name from a URL: the names dstack makes, never a path. */
export function checkRunName(name: string | undefined): string {
  if (name === undefined || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(name)) throw new HttpError(400, 'not a run name');
  return name;
}
