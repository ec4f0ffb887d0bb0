import { expect } from 'chai';
import { EventEmitter, once } from 'node:events';
import { createServer, get, type ClientRequest, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { EventHub } from '../../coordinator/ui/events.js';
import type { RunsSource } from '../../coordinator/ui/runs-source.js';

/** A RunsSource that only tells of changes: what EventHub listens to. */
class FakeSource extends EventEmitter implements RunsSource {
  version = 0;
  watchers: number[] = [];
  list = async (): Promise<never[]> => [];
  page = async (): Promise<never> => Promise.reject(new Error('not used'));
  tagOf = async (): Promise<undefined> => undefined;
  refreshSoon = (): void => undefined;
  watch = (): void => undefined;
  close = (): void => undefined;
  setWatchers(count: number): void {
    this.watchers.push(count);
    this.emit('watchers', count);
  }
}

describe('ui event streams', () => {
  let server: Server;
  let hub: EventHub;
  let source: FakeSource;
  const open: ClientRequest[] = [];

  beforeEach(async () => {
    source = new FakeSource();
    hub = new EventHub(source, (n) => source.setWatchers(n));
    server = createServer((req, res) => void hub.add(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });
  afterEach(async () => {
    for (const r of open) r.destroy();
    hub.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  /** Opens a stream and resolves once its first event (the current version) has come. */
  async function connect(): Promise<{ req: ClientRequest; res: IncomingMessage }> {
    const req = get(`http://127.0.0.1:${(server.address() as AddressInfo).port}/api/events`);
    open.push(req);
    const [res] = (await once(req, 'response')) as [IncomingMessage];
    await once(res, 'data');
    return { req, res };
  }

  it('tells the source how many tabs listen, as they come and go', async () => {
    const a = await connect();
    await connect();
    expect(source.watchers).to.deep.equal([1, 2]);
    const told = once(source, 'watchers');
    a.req.destroy();
    await told;
    expect(source.watchers).to.deep.equal([1, 2, 1]);
    hub.close();
    expect(source.watchers).to.deep.equal([1, 2, 1, 0]);
  });

  it('sends each changed run by name after the version', async () => {
    const { res } = await connect();
    const text = once(res, 'data');
    source.emit('change', 1, ['calm-otter-1']);
    expect(String((await text)[0])).to.equal('event: runs\ndata: {"version":1}\n\nevent: run\ndata: {"runName":"calm-otter-1"}\n\n');
  });
});
