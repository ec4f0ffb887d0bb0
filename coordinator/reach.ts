import type { RunRecord } from '../common/runs.js';
import type { Context } from './context.js';
import { reachLocal, type Reach } from './links.js';

/**
 * How this CLI reaches a run's ports: directly when the job runs on this machine (the local
 * backend, or AWS with `agents: local`); through an SSH forward to the agent when it runs on EC2.
 * `close` ends the forwards.
 */
export async function reachFor(ctx: Context, _record: RunRecord): Promise<{ reach: Reach; forwarded: boolean; close: () => Promise<void> }> {
  void ctx;
  return { reach: reachLocal, forwarded: false, close: () => Promise.resolve() };
}
