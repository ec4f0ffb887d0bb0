import { UsageError } from '../common/errors.js';
import { isOthers } from '../common/owner.js';
import type { Context } from './context.js';

/**
 * Refuses to `verb` (stop, delete) another owner's run unless `force`: one line that names the
 * owner and --force. Runs recorded before owners existed have none, and anyone may act on them.
 * The caller's identity is asked for only when the run has an owner.
 */
export async function refuseOthers(ctx: Pick<Context, 'owner'>, run: { runName: string; owner?: string | undefined }, verb: string, force: boolean): Promise<void> {
  if (force || run.owner === undefined) return;
  const me = await ctx.owner();
  if (isOthers(run.owner, me)) throw new UsageError(`run ${run.runName} belongs to ${run.owner}, not to you (${me}): add --force to ${verb} it anyway`);
}

/** Splits runs into the caller's own (and those without an owner) and other owners' runs; with `force` every run is the caller's to act on. */
export async function splitByOwner<T extends { owner?: string | undefined }>(ctx: Pick<Context, 'owner'>, runs: T[], force: boolean): Promise<{ mine: T[]; others: T[] }> {
  if (force || runs.every((r) => r.owner === undefined)) return { mine: runs, others: [] };
  const me = await ctx.owner();
  return { mine: runs.filter((r) => !isOthers(r.owner, me)), others: runs.filter((r) => isOthers(r.owner, me)) };
}
