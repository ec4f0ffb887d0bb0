import { EventEmitter } from 'node:events';
import { toError } from '../../common/errors.js';
import type { Store } from '../../common/ports.js';
import { AttemptRecordSchema, FinalRecordSchema, RunRecordSchema, StopRequestSchema, TagRecordSchema, type TagRecord } from '../../common/records/runs.js';
import { indexKeys, parseEndedKey, parseSubmittedKey, type EndedSummary, type RunSummary } from '../../common/run-index.js';
import { endedFacts } from '../../common/run-cost.js';
import { deriveStatus, readJson, runKeys, type AttemptRecord, type RunStatus, type RunView } from '../../common/runs.js';
import type { BudgetClock } from './store-budget.js';
import { PAGE_SIZE, rowOf, type LiveRun, type RunsPage, type RunsQuery } from './run-rows.js';
import type { RunsSource } from './runs-source.js';

export { PAGE_SIZE, type RunRowJson, type RunsPage, type RunsQuery } from './run-rows.js';

/** Options of RunCache: the (budgeted) Store, the repo, and its rhythm. */
export interface RunCacheOptions {
  store: Store;
  repoId: string;
  /** Between two incremental steps (default 2 s); each costs one listing. */
  tickMs?: number;
  /** Between two full listings of the index, which catch removed runs and ended keys (default 5 min). */
  fullEveryMs?: number;
  /**
   * How long an unfinished run stays watched (read each step) after a page showed it, while no
   * event stream is open (default 10 min); while one is, the last page's unfinished runs stay read.
   */
  watchMs?: number;
  /** Submitters' clocks may disagree: each step lists the runs submitted since this long before the newest seen (default 1 min). */
  skewMs?: number;
  clock?: BudgetClock;
  onError?: (e: Error) => void;
}

const systemClock: BudgetClock = { now: () => Date.now(), setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout) };

/**
 * The dashboard's summary of the runs, kept up to date at the cost of one listing per step. It
 * starts from the whole index (two listings, as `ps`); then each step lists only the submitted keys
 * after the newest one seen, and reads (GETs, no listing) the unfinished runs that a page showed.
 * A run seen to end takes its summary from its final record and is never read again; every
 * `fullEveryMs` the whole index is listed again, which sees runs removed or ended elsewhere. Emits
 * 'change' (version, run names) when what the table shows changed, and 'step' after each step.
 */
export class RunCache extends EventEmitter implements RunsSource {
  /** Grows by one at each change. */
  version = 0;
  /** Summaries by run name, in index order (oldest first). */
  private runs = new Map<string, RunSummary>();
  private newestSubmittedAt: string | undefined;
  private readonly live = new Map<string, LiveRun>();
  /** Ended summaries learnt by reading runs: kept over later listings whose ended key is missing. */
  private readonly endedSeen = new Map<string, EndedSummary>();
  private readonly watched = new Map<string, number>();
  /** The unfinished runs of the last page served: read at each step while a tab listens (`watchers` > 0). */
  private lastShown: string[] = [];
  /** The unfinished runs whose page was opened: read at each step while a tab listens, until they end. */
  private readonly opened = new Set<string>();
  private watchers = 0;
  /** Tag records by key and write time: a tag moved to another run is a new object. */
  private tagRecords = new Map<string, TagRecord | null>();
  private tagByRun = new Map<string, string>();
  private fingerprints = new Map<string, string>();
  private lastFullMs = -Infinity;
  private fullSoon = false;
  private timer: unknown = undefined;
  private started: Promise<void> | undefined;
  private stepping: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly o: RunCacheOptions) {
    super();
  }

  private get clock(): BudgetClock {
    return this.o.clock ?? systemClock;
  }

  /** Lists the whole index (once), then steps every `tickMs` until stopped. */
  start(): Promise<void> {
    this.started ??= this.step().then(() => this.arm());
    return this.started;
  }

  stop(): void {
    this.closed = true;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The RunsSource name of stop(). */
  close(): void {
    this.stop();
  }

  /** How many event streams are open (EventHub tells): while any is, the last page's unfinished runs are read each step. */
  setWatchers(count: number): void {
    this.watchers = count;
  }

  /** A run page shows this run: while it is unfinished and a tab listens, it is read each step. */
  watch(runName: string): void {
    if (this.runs.get(runName)?.ended) return;
    this.opened.add(runName);
    this.watched.set(runName, this.clock.now());
  }

  /** The tag that points to a run: the repo's tag index first, then the run record's own. */
  async tagOf(runName: string): Promise<string | undefined> {
    await this.start();
    return this.tagNow(runName);
  }

  /** Makes the next step a full listing (after an action of the dashboard: a tag, a stop). */
  refreshSoon(): void {
    this.fullSoon = true;
  }

  /** The summaries, newest first; runs seen to end carry their ended summary. */
  async list(): Promise<RunSummary[]> {
    await this.start();
    return [...this.runs.values()].reverse();
  }

  /** One page of the table; reads the unfinished runs of the page not yet read, and watches them. */
  async page(q: RunsQuery = {}): Promise<RunsPage> {
    const summaries = await this.list();
    const workflows = [...new Set(summaries.map((s) => s.workflow))].sort();
    const tag = q.tag?.trim() || undefined;
    let picked = summaries.filter((s) => (!q.workflow || s.workflow === q.workflow) && (tag === undefined || (this.tagNow(s.runName) ?? '').includes(tag)));
    if (q.status) picked = picked.filter((s) => this.statusOf(s) === q.status);
    const pages = Math.max(1, Math.ceil(picked.length / PAGE_SIZE));
    const page = Math.min(pages, Math.max(1, Math.floor(q.page ?? 1) || 1));
    let shown = picked.slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE);
    const now = this.clock.now();
    const unread = shown.filter((s) => !s.ended && !this.live.has(s.runName));
    if (unread.length > 0) {
      await Promise.all(unread.map((s) => this.read(s.runName)));
      this.publish();
      shown = shown.map((s) => this.runs.get(s.runName) ?? s);
    }
    for (const s of shown) if (!s.ended) this.watched.set(s.runName, now);
    this.lastShown = shown.filter((s) => !s.ended).map((s) => s.runName);
    return { runs: shown.map((s) => rowOf(s, s.ended ? undefined : this.live.get(s.runName), this.tagNow(s.runName) ?? null, now)), total: picked.length, page, pageSize: PAGE_SIZE, workflows };
  }

  /**
   * The unfinished runs as read now (GETs by known keys, no listing): what the machines and
   * services pages show (heartbeats, links). A run found ended here leaves the list for good.
   */
  async liveViews(): Promise<RunView[]> {
    await this.start();
    await Promise.all([...this.live.keys()].map((name) => this.read(name)));
    this.publish();
    return [...this.live.values()].map((l) => ({ record: l.record, attempts: l.attempts, final: null, stop: null, artifacts: null, status: l.status }));
  }

  /** One step (the timer calls it; tests too): steps never overlap. Emits 'step' when done. */
  step(): Promise<void> {
    this.stepping ??= this.doStep()
      .catch((e: unknown) => this.o.onError?.(toError(e)))
      .finally(() => {
        this.stepping = undefined;
        this.emit('step');
      });
    return this.stepping;
  }

  private arm(): void {
    if (this.closed || this.timer !== undefined) return;
    this.timer = this.clock.setTimeout(() => {
      void this.step().finally(() => {
        this.timer = undefined;
        this.arm();
      });
    }, this.o.tickMs ?? 2000);
  }

  private async doStep(): Promise<void> {
    const now = this.clock.now();
    const full = this.fullSoon || now - this.lastFullMs >= (this.o.fullEveryMs ?? 300_000);
    const toRead = new Set<string>();
    if (full) {
      await this.listAll();
      // Only once it has succeeded: a failed full listing is tried again at the next step.
      this.fullSoon = false;
      this.lastFullMs = now;
      // As `ps` does: every unfinished run is read on a full listing (they are few), so that status filters hold.
      for (const s of this.runs.values()) if (!s.ended) toRead.add(s.runName);
    } else {
      for (const name of await this.listNew()) toRead.add(name);
      // A tab that listens shows the last page: its unfinished runs must show their start and end
      // without waiting for the next full listing, however long they stay queued or running.
      const onScreen = new Set(this.watchers > 0 ? [...this.lastShown, ...this.opened] : []);
      for (const name of onScreen) if (this.runs.has(name) && !this.runs.get(name)?.ended) toRead.add(name);
      for (const [name, atMs] of this.watched) {
        if (this.runs.get(name)?.ended || (now - atMs > (this.o.watchMs ?? 600_000) && !onScreen.has(name))) this.watched.delete(name);
        else toRead.add(name);
      }
    }
    await Promise.all([...toRead].map((name) => this.read(name)));
    this.publish();
  }

  private async listAll(): Promise<void> {
    const { store, repoId } = this.o;
    const [submitted, ended] = await Promise.all([store.list(indexKeys.submitted(repoId)), store.list(indexKeys.ended(repoId)), this.readTags()]);
    const endedByRun = new Map<string, EndedSummary>(this.endedSeen);
    for (const o of ended) {
      const parsed = parseEndedKey(o.key.slice(indexKeys.ended(repoId).length));
      if (parsed) endedByRun.set(parsed.runName, parsed.ended);
    }
    const runs = new Map<string, RunSummary>();
    for (const o of submitted) {
      const parsed = parseSubmittedKey(o.key.slice(indexKeys.submitted(repoId).length));
      if (parsed) runs.set(parsed.runName, { ...parsed, ended: endedByRun.get(parsed.runName) ?? null });
    }
    for (const name of this.live.keys()) if (!runs.get(name) || runs.get(name)?.ended) this.live.delete(name);
    for (const name of this.opened) if (!runs.get(name) || runs.get(name)?.ended) this.opened.delete(name);
    this.runs = runs;
    this.newestSubmittedAt = [...runs.values()].at(-1)?.submittedAt;
  }

  /** The runs submitted since the newest seen (less the clock skew): one listing. */
  private async listNew(): Promise<string[]> {
    const prefix = indexKeys.submitted(this.o.repoId);
    const since = this.newestSubmittedAt === undefined ? undefined : new Date(Date.parse(this.newestSubmittedAt) - (this.o.skewMs ?? 60_000)).toISOString();
    const objects = await this.o.store.list(prefix, since === undefined ? {} : { startAfter: `${prefix}${since}` });
    const added: string[] = [];
    for (const o of objects) {
      const parsed = parseSubmittedKey(o.key.slice(prefix.length));
      if (!parsed || this.runs.has(parsed.runName)) continue;
      this.runs.set(parsed.runName, { ...parsed, ended: null });
      added.push(parsed.runName);
      if (this.newestSubmittedAt === undefined || parsed.submittedAt > this.newestSubmittedAt) this.newestSubmittedAt = parsed.submittedAt;
    }
    // New runs are appended: keep the map in index order (submittedAt first).
    if (added.length > 0) this.runs = new Map([...this.runs].sort(([, a], [, b]) => (a.submittedAt < b.submittedAt ? -1 : a.submittedAt > b.submittedAt ? 1 : 0)));
    return added;
  }

  /** Lists the tags (one listing) and reads the tag records not seen before: tags are few. */
  private async readTags(): Promise<void> {
    const { store, repoId } = this.o;
    const objects = await store.list(runKeys.tags(repoId));
    const records = new Map<string, TagRecord | null>();
    await Promise.all(
      objects.map(async (o) => {
        const id = `${o.key}@${o.modifiedAtMs ?? ''}`;
        records.set(id, this.tagRecords.has(id) ? (this.tagRecords.get(id) ?? null) : await readJson(store, o.key, TagRecordSchema).catch(() => null));
      }),
    );
    this.tagRecords = records;
    this.tagByRun = new Map([...records.values()].flatMap((t) => (t ? [[t.runName, t.tag] as const] : [])));
  }

  /**
   * Reads an unfinished run by known keys, without listing: the record once, then each time its
   * final status, stop request, and attempts from the last one known to the first missing.
   */
  private async read(runName: string): Promise<void> {
    const { store, repoId } = this.o;
    try {
      const prev = this.live.get(runName);
      const record = prev?.record ?? (await readJson(store, runKeys.record(repoId, runName), RunRecordSchema));
      if (!record) return;
      const [final, stop] = await Promise.all([readJson(store, runKeys.final(repoId, runName), FinalRecordSchema), readJson(store, runKeys.stop(repoId, runName), StopRequestSchema)]);
      const attempts = prev ? prev.attempts.slice(0, -1) : [];
      for (let n = attempts.length + 1; ; n++) {
        const a = await readJson(store, runKeys.attempt(repoId, runName, n), AttemptRecordSchema);
        if (!a) break;
        attempts.push(a);
      }
      const summary = this.runs.get(runName);
      if (!summary) return;
      if (final) {
        const ended: EndedSummary = { status: final.status, attempt: final.attempt, exitCode: final.exitCode, reason: final.reason ?? '', ...endedFacts({ record, attempts }, final), finishedAt: final.finishedAt };
        this.endedSeen.set(runName, ended);
        this.runs.set(runName, { ...summary, ended });
        this.live.delete(runName);
        this.watched.delete(runName);
        this.opened.delete(runName);
        return;
      }
      this.live.set(runName, { record, attempts, status: deriveStatus(null, attempts, stop, this.clock.now()) });
    } catch (e) {
      // A damaged run keeps what was known of it; the others go on.
      this.o.onError?.(toError(e));
    }
  }

  /** Bumps the version and emits 'change' when what a row shows has changed since the last time. */
  private publish(): void {
    const next = new Map<string, string>();
    for (const s of this.runs.values()) next.set(s.runName, this.fingerprint(s));
    const changed = [...next].filter(([name, f]) => this.fingerprints.get(name) !== f).map(([name]) => name);
    const removed = [...this.fingerprints.keys()].filter((name) => !next.has(name));
    this.fingerprints = next;
    if (changed.length + removed.length === 0) return;
    this.version += 1;
    this.emit('change', this.version, [...changed, ...removed]);
  }

  private fingerprint(s: RunSummary): string {
    if (s.ended) return `ended/${s.ended.status}/${this.tagNow(s.runName) ?? ''}`;
    const live = this.live.get(s.runName);
    const last = live?.attempts.at(-1);
    return `${live?.status ?? '?'}/${live?.attempts.length ?? 0}/${last?.state ?? ''}/${last?.instance?.id ?? ''}/${this.tagNow(s.runName) ?? ''}`;
  }

  private statusOf(s: RunSummary): RunStatus {
    return s.ended?.status ?? this.live.get(s.runName)?.status ?? 'submitted';
  }

  private tagNow(runName: string): string | undefined {
    return this.tagByRun.get(runName) ?? this.live.get(runName)?.record.tag;
  }
}
