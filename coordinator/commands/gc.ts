import { collectGarbage } from '../../common/gc.js';
import { orphanGraceMs } from '../../common/orphans.js';
import type { Context } from '../context.js';
import { formatBytes } from '../output.js';

/**
 * `dstack gc [--dry-run]`: removes what crashes and `rm` leave behind (job folders of dead attempts,
 * temp files, unreferenced blobs and manifests) and settles runs that were never queued; prints
 * what it removed and the bytes freed.
 */
export async function gcCommand(ctx: Context, o: { dryRun: boolean }): Promise<number> {
  const report = await collectGarbage({ store: ctx.store, ...(await ctx.gcTargets()), orphanGraceMs: orphanGraceMs(ctx.config), dryRun: o.dryRun });
  const verb = o.dryRun ? 'would remove' : 'removed';
  for (const item of report.removed) ctx.out.line(`${verb} ${item.kind} ${item.what} (${formatBytes(item.sizeBytes)})`);
  // Unreferenced blobs and manifests go only at a second sweep (common/gc.ts); say which wait, and until when.
  if (o.dryRun) for (const c of report.candidates) ctx.out.line(`candidate ${c.kind} ${c.what} (${formatBytes(c.sizeBytes)}): unreferenced since ${iso(c.sinceMs)}, removed by a sweep from ${iso(c.goesAtMs)}`);
  if (report.candidates.length > 0) {
    const bytes = report.candidates.reduce((n, c) => n + c.sizeBytes, 0);
    const first = report.candidates.reduce((t, c) => Math.min(t, c.goesAtMs), Infinity);
    ctx.out.note(`${report.candidates.length} unreferenced blob(s) and manifest(s) (${formatBytes(bytes)}) wait for a sweep from ${iso(first)} on`);
  }
  for (const run of report.settled) ctx.out.line(`${o.dryRun ? 'would settle' : 'settled'} run ${run} as failed: it was never queued`);
  for (const note of report.notes) ctx.out.note(note);
  const bytes = report.removed.reduce((n, x) => n + x.sizeBytes, 0);
  const count = report.removed.length;
  ctx.out.line(o.dryRun ? `Would free ${formatBytes(bytes)} in ${count} item(s).` : `Freed ${formatBytes(bytes)} in ${count} item(s).`);
  return 0;
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
