import { UsageError } from '../common/errors.js';
import { isOthers, normalizeOwner } from '../common/owner.js';
import { indexedOwner } from '../common/run-index.js';
import type { Context } from './context.js';

/**
 * Refuses to `verb` (stop, delete) another owner's run unless `force`: one line that names the
 * owner and --force. Runs recorded before owners existed have none, and anyone may act on them.
 * The caller's identity is asked for only when the run has an owner.
 */
export async function refuseOthers(ctx: Pick<Context, 'owner'>, run: OwnedRun, verb: string, force: boolean): Promise<void> {
  if (force || run.owner === undefined) return;
  const me = await ctx.owner();
  if (othersRun(run, me)) throw new UsageError(`run ${run.runName} belongs to ${run.owner}, not to you (${me}): add --force to ${verb} it anyway`);
}

/** A run and its owner; `ownerIsCut` when the owner comes from the run index (cut short), as for a run whose record is damaged. */
export interface OwnedRun {
  runName: string;
  owner?: string | undefined;
  ownerIsCut?: boolean;
}

/** Whether the run is another owner's; an owner from the index is compared with the caller's cut alike. */
function othersRun(run: { owner?: string | undefined; ownerIsCut?: boolean }, me: string): boolean {
  if (run.owner === undefined) return false;
  return run.ownerIsCut ? normalizeOwner(run.owner) !== normalizeOwner(indexedOwner(normalizeOwner(me))) : isOthers(run.owner, me);
}

/** Splits runs into the caller's own (and those without an owner) and other owners' runs; with `force` every run is the caller's to act on. */
export async function splitByOwner<T extends { owner?: string | undefined; ownerIsCut?: boolean }>(ctx: Pick<Context, 'owner'>, runs: T[], force: boolean): Promise<{ mine: T[]; others: T[] }> {
  if (force || runs.every((r) => r.owner === undefined)) return { mine: runs, others: [] };
  const me = await ctx.owner();
  return { mine: runs.filter((r) => !othersRun(r, me)), others: runs.filter((r) => othersRun(r, me)) };
}
