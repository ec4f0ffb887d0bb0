import { UsageError } from '../../common/errors.js';
import { loadRun } from '../../common/runs.js';
import { repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';
import { follow } from '../submit.js';

/**
 * `dstack attach RUN`: back to a running run from any terminal, after Ctrl-C or from another one:
 * its output so far and as it comes, each link again (a dev environment's with its token, each
 * port's), and on EC2 the SSH forwards again. Ctrl-C detaches; the run goes on.
 */
export async function attachCommand(ctx: Context, run: string): Promise<number> {
  const info = await repoInfo(ctx.cwd);
  const view = await loadRun(ctx.store, info.repoId, run);
  if (view.final) {
    throw new UsageError(`run ${run} has ended (${view.final.status}${view.final.reason ? `: ${view.final.reason}` : ''}): \`dstack logs ${run}\` shows its output`);
  }
  ctx.out.note(`Attached to run ${run} (workflow ${view.record.workflow}). To detach, press Ctrl+C.`);
  return follow(ctx, view.record, false);
}
