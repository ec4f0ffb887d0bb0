import { toError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { InstanceMetadata } from './imds.js';

/** EC2 polls: the two-minute interruption notice, and the earlier rebalance recommendation. */
export const SPOT_ACTION_PATH = 'latest/meta-data/spot/instance-action';
export const REBALANCE_PATH = 'latest/meta-data/events/recommendations/rebalance';

export interface SpotWatchOptions {
  imds: InstanceMetadata;
  log: Logger;
  /** 5 s: the notice comes two minutes ahead, and a fast handover is most of the point. */
  intervalMs: number;
  /** The instance will be reclaimed: stop the job, checkpoint it and hand it back. */
  onNotice: (reason: string) => void;
  /** The instance is at elevated risk: finish the current job but take no new ones. */
  onRebalance: () => void;
}

/**
 * Polls IMDS for spot interruption notices and rebalance recommendations (both 404 until EC2 sets
 * them), re-armed with setTimeout. Returns a function that stops the polling.
 */
export function watchSpot(o: SpotWatchOptions): () => void {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let noticed = false;
  let rebalanced = false;
  const poll = async (): Promise<void> => {
    try {
      const action = noticed ? null : await o.imds.get(SPOT_ACTION_PATH);
      if (action !== null && !noticed) {
        noticed = true;
        // The notice counts even if its body cannot be read.
        let parsed: { action?: string; time?: string } = {};
        try {
          parsed = JSON.parse(action) as typeof parsed;
        } catch {
          o.log.log('warn', 'spot notice body is not JSON', { body: action.slice(0, 200) });
        }
        o.log.log('warn', 'spot interruption notice', { action: parsed.action, time: parsed.time });
        o.onNotice(`spot interruption notice (${parsed.action ?? 'terminate'} at ${parsed.time ?? '?'})`);
      }
      const rebalance = rebalanced || noticed ? null : await o.imds.get(REBALANCE_PATH);
      if (rebalance !== null && !rebalanced) {
        rebalanced = true;
        o.log.log('warn', 'rebalance recommendation: finishing the current job, taking no new ones');
        o.onRebalance();
      }
    } catch (e) {
      o.log.log('warn', 'spot notice poll failed', { error: toError(e).message });
    }
    if (!stopped) timer = setTimeout(() => void poll(), o.intervalMs);
  };
  timer = setTimeout(() => void poll(), 0);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
