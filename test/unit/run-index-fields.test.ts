import { expect } from 'chai';
import { LocalStore } from '../../common/local/local-store.js';
import { endedKey, indexKeys, listSummaries, parseEndedKey, submittedKey } from '../../common/run-index.js';
import { endedFacts, runCost } from '../../common/run-cost.js';
import type { AttemptRecord, FinalRecord, RunRecord } from '../../common/runs.js';
import { removeAll, tempDir } from '../support/cli.js';

const REPO = 'github.com/acme/train';
const FINAL: FinalRecord = { status: 'failed', exitCode: 137, reason: 'killed, out of memory', finishedAt: '2026-11-25T10:30:00.000Z', attempt: 2 };

function attempt(n: number, startedAt: string, endedAt: string, type: string, market: 'spot' | 'on-demand'): AttemptRecord {
  return { attempt: n, agentId: `a${n}`, host: 'h', startedAt, heartbeatAt: endedAt, endedAt, leaseMs: 30_000, state: 'ended', instance: { id: `i-${n}`, type, market } };
}

const PLACEMENT: NonNullable<RunRecord['placement']> = {
  profileId: 'gpu',
  offers: [
    { instanceType: 'g5.xlarge', market: 'spot', pricePerHour: 0.5, vcpus: 4, memoryMiB: 16384, gpu: null },
    { instanceType: 'g5.xlarge', market: 'on-demand', pricePerHour: 1.2, vcpus: 4, memoryMiB: 16384, gpu: null },
  ],
};

describe('run index: duration, cost and instance in the ended key', () => {
  let dir: string;
  afterEach(() => dir && removeAll(dir));

  it('a run on two instances: duration from its first start, cost over both attempts, the last instance', () => {
    // 1 h on spot at $0.50, then 30 min on-demand at $1.20: $1.10; from 08:00 to the final status at 10:30.
    const run = {
      record: { placement: PLACEMENT },
      attempts: [attempt(1, '2026-11-25T08:00:00.000Z', '2026-11-25T09:00:00.000Z', 'g5.xlarge', 'spot'), attempt(2, '2026-11-25T10:00:00.000Z', '2026-11-25T10:30:00.000Z', 'g5.xlarge', 'on-demand')],
    };
    const facts = endedFacts(run, FINAL);
    expect(facts).to.deep.equal({ durationMs: 2.5 * 3_600_000, costUsd: runCost(run, Date.parse(FINAL.finishedAt)), instance: 'g5.xlarge on-demand' });
    expect(facts.costUsd).to.be.closeTo(1.1, 1e-9);
    const parsed = parseEndedKey(endedKey(REPO, 'brave-otter-3', FINAL, facts).slice(indexKeys.ended(REPO).length));
    expect(parsed).to.deep.equal({
      runName: 'brave-otter-3',
      ended: { status: 'failed', attempt: 2, exitCode: 137, reason: 'killed, out of memory', finishedAt: FINAL.finishedAt, durationMs: 9_000_000, costUsd: 1.1, instance: 'g5.xlarge on-demand' },
    });
  });

  it('a run that never started: finishedAt known, the rest unknown', () => {
    const facts = endedFacts({ record: {}, attempts: [] }, FINAL);
    expect(facts).to.deep.equal({ durationMs: null, costUsd: null, instance: null });
    const key = endedKey(REPO, 'calm-owl-1', { ...FINAL, reason: null, attempt: null, exitCode: null }, facts);
    expect(key.endsWith(',-,-,-')).to.equal(true);
    expect(parseEndedKey(key.slice(indexKeys.ended(REPO).length))?.ended).to.deep.equal({
      status: 'failed', attempt: null, exitCode: null, reason: '', finishedAt: FINAL.finishedAt, durationMs: null, costUsd: null, instance: null,
    });
  });

  it('reads keys of older versions (five fields) without the new fields', async () => {
    dir = tempDir('index-fields');
    const store = new LocalStore(dir);
    const record = { submittedAt: '2026-01-01T00:00:00.000Z', runName: 'old-run-1', workflow: 'train', maxAttempts: 3 };
    await store.put(submittedKey(REPO, record), '');
    await store.put(`${indexKeys.ended(REPO)}old-run-1,done,1,0,exit%20code%200`, '');
    const [summary] = await listSummaries(store, REPO);
    expect(summary?.ended).to.deep.equal({ status: 'done', attempt: 1, exitCode: 0, reason: 'exit code 0' });
  });

  it('keeps the longest key a file name (under 255 bytes), cutting the reason, and the local store takes it', async () => {
    dir = tempDir('index-fields');
    const store = new LocalStore(dir);
    const longest: FinalRecord = { status: 'stopped', exitCode: -2147483648, reason: `${'é'.repeat(300)},%`, finishedAt: '+275760-09-13T00:00:00.000Z', attempt: 2147483647 };
    const facts = { durationMs: Number.MAX_SAFE_INTEGER, costUsd: -123456789.123456, instance: `${'x'.repeat(100)} on-demand` };
    const runName = 'curious-hedgehog-2147483647';
    const key = endedKey(REPO, runName, longest, facts);
    const segment = key.slice(indexKeys.ended(REPO).length);
    expect(Buffer.byteLength(segment)).to.be.at.most(250);
    await store.put(key, '');
    const [listed] = await store.list(indexKeys.ended(REPO));
    const parsed = parseEndedKey(listed?.key.slice(indexKeys.ended(REPO).length) ?? '');
    expect(parsed?.runName).to.equal(runName);
    // The reason is cut by whole characters, the numbers are whole.
    expect(parsed?.ended.reason).to.match(/^é+$/);
    expect(parsed?.ended).to.deep.include({ status: 'stopped', exitCode: -2147483648, attempt: 2147483647, durationMs: Number.MAX_SAFE_INTEGER, costUsd: -123456789.123456, finishedAt: longest.finishedAt });
    expect(parsed?.ended.instance).to.match(/^x+$/);
  });
});
