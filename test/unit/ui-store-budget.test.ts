import { expect } from 'chai';
import type { ListOptions, ObjectInfo, Store } from '../../common/ports.js';
import { BudgetClosedError, BudgetedStore } from '../../coordinator/ui/store-budget.js';
import { FakeClock, settle } from '../support/fake-clock.js';

/** A Store whose lists are answered by hand, recording when each one reached it. */
function fakeStore(clock: FakeClock): { store: Store; lists: Array<{ prefix: string; startAfter?: string; atMs: number; answer(keys: string[]): void }>; gets: string[] } {
  const lists: Array<{ prefix: string; startAfter?: string; atMs: number; answer(keys: string[]): void }> = [];
  const gets: string[] = [];
  const no = (): never => {
    throw new Error('not used');
  };
  const store: Store = {
    list: (prefix: string, o: ListOptions = {}) =>
      new Promise<ObjectInfo[]>((resolve) => {
        lists.push({ prefix, ...(o.startAfter === undefined ? {} : { startAfter: o.startAfter }), atMs: clock.now(), answer: (keys) => resolve(keys.map((key) => ({ key, sizeBytes: 0 }))) });
      }),
    get: async (key) => {
      gets.push(key);
      return Buffer.from(key);
    },
    head: async (key) => ({ key, sizeBytes: 1 }),
    put: no,
    putStream: no,
    getStream: no,
    delete: no,
    touch: no,
  };
  return { store, lists, gets };
}

describe('ui store budget: at most one listing a second for the whole server', () => {
  let clock: FakeClock;
  let fake: ReturnType<typeof fakeStore>;
  let budget: BudgetedStore;
  beforeEach(() => {
    clock = new FakeClock();
    fake = fakeStore(clock);
    budget = new BudgetedStore(fake.store, { clock });
  });
  afterEach(() => budget.close());

  it('starts one list at once and the next ones a second apart, in order', async () => {
    const t0 = clock.now();
    const answers = ['a/', 'b/', 'c/', 'd/'].map((p) => budget.list(p));
    await settle();
    expect(fake.lists.map((l) => l.prefix)).to.deep.equal(['a/']);
    await clock.tickAsync(999);
    expect(fake.lists).to.have.length(1);
    await clock.tickAsync(1);
    expect(fake.lists.map((l) => l.prefix)).to.deep.equal(['a/', 'b/']);
    await clock.tickAsync(5000);
    expect(fake.lists.map((l) => [l.prefix, l.atMs - t0])).to.deep.equal([['a/', 0], ['b/', 1000], ['c/', 2000], ['d/', 3000]]);
    fake.lists.forEach((l) => l.answer([`${l.prefix}x`]));
    expect((await Promise.all(answers)).map((objs) => objs.map((o) => o.key))).to.deep.equal([['a/x'], ['b/x'], ['c/x'], ['d/x']]);
  });

  it('a list asked after a quiet second starts at once', async () => {
    void budget.list('a/');
    await clock.tickAsync(1500);
    void budget.list('b/');
    await settle();
    expect(fake.lists.map((l) => l.prefix)).to.deep.equal(['a/', 'b/']);
  });

  it('identical lists, waiting or under way, share one request; startAfter makes them different', async () => {
    const first = budget.list('idx/');
    const waiting = [budget.list('other/'), budget.list('idx/', { startAfter: 'idx/5' })];
    const same = [budget.list('idx/'), budget.list('idx/')];
    await clock.tickAsync(5000);
    expect(fake.lists.map((l) => [l.prefix, l.startAfter])).to.deep.equal([['idx/', undefined], ['other/', undefined], ['idx/', 'idx/5']]);
    // Asked while the same list is under way: shares it too.
    const late = budget.list('other/');
    await clock.tickAsync(5000);
    expect(fake.lists).to.have.length(3);
    fake.lists.forEach((l) => l.answer([`${l.prefix}${l.startAfter ?? ''}`]));
    const keys = async (p: Promise<ObjectInfo[]>): Promise<string[]> => (await p).map((o) => o.key);
    expect(await keys(first)).to.deep.equal(['idx/']);
    expect(await Promise.all(same.map(keys))).to.deep.equal([['idx/'], ['idx/']]);
    expect(await keys(late)).to.deep.equal(['other/']);
    expect(await Promise.all(waiting.map(keys))).to.deep.equal([['other/'], ['idx/idx/5']]);
    // Once answered, the same list again costs a new request (it may have changed).
    void budget.list('idx/');
    await clock.tickAsync(1000);
    expect(fake.lists).to.have.length(4);
    expect(budget.listsStarted).to.equal(4);
  });

  it('gets and heads are not held behind waiting lists', async () => {
    void budget.list('a/');
    void budget.list('b/');
    expect((await budget.get('runs/x/run.json'))?.toString()).to.equal('runs/x/run.json');
    expect(await budget.head('k')).to.deep.equal({ key: 'k', sizeBytes: 1 });
    expect(fake.lists).to.have.length(1);
  });

  it('close rejects the waiting lists and starts no more', async () => {
    void budget.list('a/');
    const waiting = budget.list('b/');
    budget.close();
    let err: unknown;
    await waiting.catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(BudgetClosedError);
    await clock.tickAsync(10_000);
    expect(fake.lists.map((l) => l.prefix)).to.deep.equal(['a/']);
    let after: unknown;
    await budget.list('c/').catch((e: unknown) => (after = e));
    expect(after).to.be.instanceOf(BudgetClosedError);
  });
});
