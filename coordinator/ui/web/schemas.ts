// zod/mini, imported as a namespace: tree-shaken to a few KB of the page's bundle (`import { z }` keeps all of zod's locales, ~400 KB).
import * as z from 'zod/mini';

/**
 * The JSON the dashboard's server answers, one schema per endpoint (coordinator/ui/api-*.ts): the
 * page parses every answer with its schema instead of trusting a cast, so that a server and a page
 * of different builds fail with one line on the page, not with `undefined` deep in a component.
 * The server's own types live in node code, which the web build cannot import: these mirror them.
 */

export const RunStatusSchema = z.enum(['submitted', 'running', 'stopping', 'done', 'failed', 'stopped']);
export type RunStatus = z.infer<typeof RunStatusSchema>;

/** One line of the runs table; null where unknown (coordinator/ui/run-rows.ts RunRowJson). */
export const RunRowSchema = z.object({
  runName: z.string(),
  workflow: z.string(),
  status: RunStatusSchema,
  attempt: z.nullable(z.number()),
  maxAttempts: z.number(),
  owner: z.nullable(z.string()),
  submittedAt: z.string(),
  durationMs: z.nullable(z.number()),
  instance: z.nullable(z.string()),
  costUsd: z.nullable(z.number()),
  tag: z.nullable(z.string()),
});
export type RunRow = z.infer<typeof RunRowSchema>;

/** `GET api/runs`. */
export const RunsPageSchema = z.object({ runs: z.array(RunRowSchema), total: z.number(), page: z.number(), pageSize: z.number(), workflows: z.array(z.string()) });
export type RunsPage = z.infer<typeof RunsPageSchema>;

export const AttemptSchema = z.object({
  attempt: z.number(),
  agent: z.string(),
  host: z.string(),
  instance: z.nullable(z.string()),
  market: z.nullable(z.enum(['spot', 'on-demand'])),
  startedAt: z.string(),
  endedAt: z.nullable(z.string()),
  reason: z.nullable(z.string()),
  exitCode: z.nullable(z.number()),
});
export type Attempt = z.infer<typeof AttemptSchema>;

/** `GET api/runs/:run` (coordinator/ui/api-run.ts). */
export const RunDetailSchema = z.object({
  run: RunRowSchema,
  spec: z.record(z.string(), z.unknown()),
  overrides: z.array(z.string()),
  restartOf: z.nullable(z.string()),
  stopRequested: z.boolean(),
  code: z.object({ commit: z.nullable(z.string()), branch: z.nullable(z.string()), diff: z.string(), diffCut: z.boolean() }),
  deps: z.array(z.object({ kind: z.enum(['workflow', 'tag']), name: z.string(), runName: z.nullable(z.string()), artifacts: z.array(z.string()) })),
  dependents: z.array(z.string()),
  attempts: z.array(AttemptSchema),
  links: z.array(z.object({ kind: z.string(), port: z.number(), url: z.string() })),
  artifacts: z.array(z.object({ index: z.number(), path: z.string(), files: z.number(), sizeBytes: z.number() })),
  artifactsComplete: z.boolean(),
});
export type RunDetail = z.infer<typeof RunDetailSchema>;

/** One record of a run's output: its bytes in base64, decoded on the page per stream (a character may span two records). */
export const LogRecordSchema = z.object({ atMs: z.number(), stream: z.enum(['out', 'err']), data: z.string() });
export type LogRecord = z.infer<typeof LogRecordSchema>;

/** `GET api/runs/:run/logs` (coordinator/ui/api-logs.ts). */
export const LogsSchema = z.object({ records: z.array(LogRecordSchema), cursor: z.nullable(z.string()), done: z.boolean() });
export type LogsJson = z.infer<typeof LogsSchema>;

export const TreeEntrySchema = z.object({ path: z.string(), type: z.enum(['file', 'dir', 'symlink']), sizeBytes: z.number() });
export type TreeEntry = z.infer<typeof TreeEntrySchema>;

/** `GET api/runs/:run/artifacts/:index/tree` (coordinator/ui/api-artifacts.ts). */
export const TreeSchema = z.object({ path: z.string(), entries: z.array(TreeEntrySchema) });
export type Tree = z.infer<typeof TreeSchema>;

/** `POST api/runs/:run/stop|restart|tag` (coordinator/ui/api-actions.ts). */
export const ActionAnswerSchema = z.object({ ok: z.boolean(), message: z.string(), runName: z.optional(z.nullable(z.string())) });
export type ActionAnswer = z.infer<typeof ActionAnswerSchema>;

/** `GET api/machines` (coordinator/ui/api-machines.ts). */
export const MachinesSchema = z.object({
  agents: z.array(
    z.object({
      id: z.string(),
      location: z.string(),
      state: z.string(),
      profileId: z.nullable(z.string()),
      heartbeatAgeMs: z.nullable(z.number()),
      instanceType: z.nullable(z.string()),
      market: z.nullable(z.enum(['spot', 'on-demand'])),
      pricePerHour: z.nullable(z.number()),
    }),
  ),
  queues: z.array(z.object({ profileId: z.string(), depth: z.number() })),
  costRatePerHour: z.number(),
});
export type Machines = z.infer<typeof MachinesSchema>;

/** `GET api/cost` (coordinator/ui/api-cost.ts). */
export const CostSchema = z.object({ days: z.array(z.object({ day: z.string(), byWorkflow: z.record(z.string(), z.number()) })), total: z.number() });
export type Cost = z.infer<typeof CostSchema>;

/** `GET api/services` (coordinator/ui/api-services.ts). */
export const ServicesSchema = z.object({ services: z.array(z.object({ runName: z.string(), workflow: z.string(), provider: z.string(), url: z.string(), port: z.number() })) });
export type Services = z.infer<typeof ServicesSchema>;

/** An answer other than 2xx (coordinator/ui/http.ts sendJson). */
export const ErrorAnswerSchema = z.object({ error: z.string() });

/** The data of an SSE event (coordinator/ui/events.ts): `runs` carries the version, `run` the run's name. */
export const EventDataSchema = z.object({ version: z.optional(z.number()), runName: z.optional(z.string()) });
export type EventData = z.infer<typeof EventDataSchema>;
