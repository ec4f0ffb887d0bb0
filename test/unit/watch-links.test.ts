import { expect } from 'chai';
import { LocalStore } from '../../common/local/local-store.js';
import { runKeys } from '../../common/runs.js';
import { reachLocal, watchLinks, type Link } from '../../coordinator/links.js';
import { removeAll, tempDir } from '../support/cli.js';
import { attemptOf } from '../support/ui-data.js';

const REPO = 'github.com/acme/train';
const timeouts = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

/**
 * `dstack run -d` of a dev environment or ports job waits for its links, then exits: the CLI exits
 * when nothing holds the event loop, so a watch that has ended must leave no timer behind (its slow
 * 3 s poll held the CLI for 3 s after it printed the link).
 */
describe('watchLinks', () => {
  let dir = '';
  afterEach(() => removeAll(dir));

  it('prints a port link once it is up, and leaves no timer behind once stopped', async () => {
    dir = tempDir('watch-links');
    const store = new LocalStore(dir);
    const attempt = { ...attemptOf(1, new Date().toISOString()), service: { ports: [{ port: 41234, open: true }] } };
    await store.put(runKeys.attempt(REPO, 'nb-run-1', 1), JSON.stringify(attempt));
    const before = timeouts();
    let got!: (l: Link) => void;
    const first = new Promise<Link>((resolve) => (got = resolve));
    await watchLinks({ store, secrets: undefined, repoId: REPO, runName: 'nb-run-1', reach: reachLocal, onLink: (l) => got(l), stopped: first, pollMs: 10 });
    expect((await first).url).to.equal('http://127.0.0.1:41234');
    expect(timeouts(), 'timers left by the watch').to.equal(before);
  });
});
