import * as z from 'zod/mini';

/**
 * The shapes of the server's answers, one schema per endpoint, each parsed rather than cast: the
 * page trusts its own server, but a mismatch after an upgrade shows as one error line, not as a
 * blank page or `undefined` in a cell. zod/mini: the same checks, a tenth of the page's weight.
 */

/** `GET api/runs/:run/logs` (coordinator/ui/api-logs.ts): each record's bytes in base64. */
export const LogsSchema = z.object({
  records: z.array(z.object({ atMs: z.number(), stream: z.enum(['out', 'err']), data: z.string() })),
  cursor: z.nullable(z.string()),
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

/** `GET api/cost?days=N` (coordinator/ui/api-cost.ts). */
export const CostSchema = z.object({
  days: z.array(z.object({ day: z.string(), byWorkflow: z.record(z.string(), z.number()) })),
  total: z.number(),
});
