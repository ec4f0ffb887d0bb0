import { z } from 'zod';

/**
 * The shapes of the server's answers, one schema per endpoint, each parsed rather than cast: the
 * page trusts its own server, but a mismatch after an upgrade shows as one error line, not as a
 * blank page or `undefined` in a cell.
 */

const Status = z.enum(['submitted', 'running', 'stopping', 'done', 'failed', 'stopped']);

/** One row of the runs table (coordinator/ui/run-rows.ts RunRowJson). */
export const RunRowSchema = z.object({
  runName: z.string(),
  workflow: z.string(),
  status: Status,
  attempt: z.number().nullable(),
  maxAttempts: z.number(),
  owner: z.string().nullable(),
  submittedAt: z.string(),
  durationMs: z.number().nullable(),
  instance: z.string().nullable(),
  costUsd: z.number().nullable(),
  tag: z.string().nullable(),
});

/** `GET api/runs/:run/logs` (coordinator/ui/api-logs.ts): each record's bytes in base64. */
export const LogsSchema = z.object({
  records: z.array(z.object({ atMs: z.number(), stream: z.enum(['out', 'err']), data: z.string() })),
  cursor: z.string().nullable(),
  done: z.boolean(),
});
export type LogsJson = z.infer<typeof LogsSchema>;

/** `GET api/runs/:run/artifacts/:index/tree` (coordinator/ui/api-artifacts.ts). */
export const TreeSchema = z.object({
  path: z.string(),
  entries: z.array(z.object({ path: z.string(), type: z.enum(['file', 'dir', 'symlink']), sizeBytes: z.number() })),
});

/** `GET api/services` (coordinator/ui/api-services.ts). */
export const ServicesSchema = z.object({
  services: z.array(z.object({ runName: z.string(), workflow: z.string(), provider: z.string(), url: z.string(), port: z.number() })),
});

/** `GET api/machines` (coordinator/ui/api-machines.ts). */
export const MachinesSchema = z.object({
  agents: z.array(
    z.object({
      id: z.string(),
      location: z.string(),
      state: z.string(),
      profileId: z.string().nullable(),
      heartbeatAgeMs: z.number().nullable(),
      instanceType: z.string().nullable(),
      market: z.enum(['spot', 'on-demand']).nullable(),
      pricePerHour: z.number().nullable(),
    }),
  ),
  queues: z.array(z.object({ profileId: z.string(), depth: z.number() })),
  costRatePerHour: z.number(),
});

/** `GET api/cost?days=N` (coordinator/ui/api-cost.ts). */
export const CostSchema = z.object({
  days: z.array(z.object({ day: z.string(), byWorkflow: z.record(z.string(), z.number()) })),
  total: z.number(),
});

/** The server's one-line error (`{error}`), else the HTTP status. */
async function failure(res: Response): Promise<string> {
  const body: unknown = await res.json().catch(() => undefined);
  const parsed = z.object({ error: z.string() }).safeParse(body);
  return parsed.success ? parsed.data.error : `HTTP ${res.status}`;
}

/** GETs a path (relative: the app lives under a per-server prefix) and parses its JSON with `schema`. */
export async function getParsed<T>(path: string, schema: z.ZodType<T>): Promise<T> {
  const res = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
  if (!res.ok) throw new Error(await failure(res));
  const parsed = schema.safeParse(await res.json());
  if (!parsed.success) throw new Error(`unexpected answer from ${path.split('?')[0] ?? path}: ${parsed.error.issues[0]?.message ?? 'wrong shape'}`);
  return parsed.data;
}
