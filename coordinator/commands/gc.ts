import { openBackend } from '../../common/backend.js';
import { collectGarbage, localTargets } from '../../common/gc.js';
import { orphanGraceMs } from '../../common/orphans.js';
import type { Context } from '../context.js';
import { formatBytes } from '../output.js';

/**
 * `dstack gc [--dry-run]`: removes what crashes and `rm` leave behind (job folders of dead attempts,
 * temp files, unreferenced blobs and manifests) and settles runs that were never queued; prints
 * what it removed and the bytes freed.
 */
export async function gcCommand(ctx: Context, o: { dryRun: boolean }): Promise<number> {
  const backend = await openBackend(ctx.config);
  const report = await collectGarbage({ store: ctx.store, ...localTargets(backend), orphanGraceMs: orphanGraceMs(ctx.config), dryRun: o.dryRun });
  const verb = o.dryRun ? 'would remove' : 'removed';
  for (const item of report.removed) ctx.out.line(`${verb} ${item.kind} ${item.what} (${formatBytes(item.sizeBytes)})`);
  for (const run of report.settled) ctx.out.line(`${o.dryRun ? 'would settle' : 'settled'} run ${run} as failed: it was never queued`);
  for (const note of report.notes) ctx.out.note(note);
  const bytes = report.removed.reduce((n, x) => n + x.sizeBytes, 0);
  const count = report.removed.length;
  ctx.out.line(o.dryRun ? `Would free ${formatBytes(bytes)} in ${count} item(s).` : `Freed ${formatBytes(bytes)} in ${count} item(s).`);
  return 0;
}
