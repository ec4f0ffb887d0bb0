import { expect } from 'chai';
import { CorruptRecordError } from '../../common/records/read.js';
import { createRun, listRuns, loadRun, runKeys, settleRun, type RunRecord } from '../../common/runs.js';
import type { JobSpec } from '../../common/spec/job-spec.js';
import { withTempStore } from '../support/temp-store.js';

const REPO = 'github.com/acme/records';

/** A run record as the first versions wrote it: no overrides, no toolVersion. */
const FIRST_RECORD = {
  runName: 'old-otter-1',
  repoId: REPO,
  workflow: 'train',
  jobId: 'j1',
  submittedAt: '2026-10-01T10:00:00.000Z',
  maxAttempts: 3,
  spec: { specVersion: 1, repoId: REPO, runName: 'old-otter-1', commands: ['echo hi'] },
};

/** An attempt and a final status as today's agent writes them. */
const ATTEMPT = {
  attempt: 1,
  agentId: 'a1',
  host: 'box',
  startedAt: '2026-10-01T10:00:01.000Z',
  heartbeatAt: '2026-10-01T10:00:05.000Z',
  leaseMs: 30000,
  state: 'ended',
  endedAt: '2026-10-01T10:00:06.000Z',
  hostFacts: { hostname: 'box', platform: 'linux', arch: 'x64', cpus: 2, memoryMiB: 4096, nodeVersion: 'v20.19.0', agentVersion: '0.1.0' },
};
const FINAL = { status: 'done', exitCode: 0, reason: null, finishedAt: '2026-10-01T10:00:06.000Z', attempt: 1 };

describe('stored records: parsed with their schemas, older ones readable', () => {
  const t = withTempStore('records');

  const putRun = async (record: unknown, final: unknown = FINAL): Promise<void> => {
    await t.store.put(runKeys.record(REPO, 'old-otter-1'), JSON.stringify(record, null, 2));
    await t.store.put(runKeys.attempt(REPO, 'old-otter-1', 1), JSON.stringify(ATTEMPT));
    await t.store.put(runKeys.final(REPO, 'old-otter-1'), typeof final === 'string' ? final : JSON.stringify(final, null, 2));
  };

  it('reads a run record written before overrides and toolVersion existed', async () => {
    await putRun(FIRST_RECORD);
    const view = await loadRun(t.store, REPO, 'old-otter-1');
    expect(view.status).to.equal('done');
    expect(view.record.overrides).to.deep.equal([]);
    expect(view.record.toolVersion).to.equal('unknown');
    expect(view.attempts[0]?.hostFacts?.agentVersion).to.equal('0.1.0');
  });

  it('a damaged final status is a CorruptRecordError that names its key and how to remove the run', async () => {
    await putRun(FIRST_RECORD, '{"status": "done", "exitCode": "zero"');
    const err = await loadRun(t.store, REPO, 'old-otter-1').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(CorruptRecordError);
    const message = (err as CorruptRecordError).message;
    expect(message).to.include(runKeys.final(REPO, 'old-otter-1')).and.include('dstack rm old-otter-1');
    expect(message).to.not.include('\n');
  });

  it('a record of the wrong shape is corrupt too, and the field is named', async () => {
    await putRun(FIRST_RECORD, { ...FINAL, status: 'finished' });
    const err = await loadRun(t.store, REPO, 'old-otter-1').catch((e: unknown) => e);
    expect(err).to.be.instanceOf(CorruptRecordError);
    expect((err as CorruptRecordError).message).to.include('status');
  });

  it('listRuns tells about a damaged unfinished run and lists the others', async () => {
    const make = (i: number) => (runName: string): RunRecord => ({ ...FIRST_RECORD, runName, jobId: `j${i}`, spec: {} as JobSpec, overrides: [], toolVersion: 'test' });
    const a = await createRun(t.store, make(1));
    const b = await createRun(t.store, make(2));
    const c = await createRun(t.store, make(3));
    await settleRun(t.store, REPO, c.runName, { status: 'done', exitCode: 0, reason: null, finishedAt: new Date().toISOString(), attempt: 1 });
    await t.store.put(runKeys.record(REPO, a.runName), 'not json');
    const told: string[] = [];
    const rows = await listRuns(t.store, REPO, { onCorrupt: (e) => told.push(e.key) });
    expect(rows.map((r) => r.summary.runName).sort()).to.deep.equal([b.runName, c.runName].sort());
    expect(told).to.deep.equal([runKeys.record(REPO, a.runName)]);
    expect((await listRuns(t.store, REPO)).map((r) => r.summary.runName).sort()).to.deep.equal([b.runName, c.runName].sort());
  });
});
