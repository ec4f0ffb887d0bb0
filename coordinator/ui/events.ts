import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RunsSource } from './runs-source.js';

/** How often an idle stream gets a comment, so that proxies and the browser keep it open. */
const KEEP_ALIVE_MS = 15_000;

/**
 * The server-sent events of `/api/events`: `runs` (`{version}`) whenever the summaries change, and
 * `run` (`{runName}`) for each run that changed. One listener on the source serves every open tab,
 * so the tabs add no Store reads of their own.
 */
export class EventHub {
  private readonly clients = new Set<ServerResponse>();
  private readonly timer: NodeJS.Timeout;
  private readonly onChange = (version: number, changed: string[]): void => {
    let text = `event: runs\ndata: ${JSON.stringify({ version })}\n\n`;
    for (const runName of changed) text += `event: run\ndata: ${JSON.stringify({ runName })}\n\n`;
    for (const res of this.clients) res.write(text);
  };

  /** `onClients` hears the number of open streams each time it changes (RunsSource.setWatchers). */
  constructor(
    private readonly runs: RunsSource,
    private readonly onClients: (count: number) => void = () => undefined,
  ) {
    runs.on('change', this.onChange);
    this.timer = setInterval(() => {
      for (const res of this.clients) res.write(': keep-alive\n\n');
    }, KEEP_ALIVE_MS);
    // The keep-alive alone must not hold the CLI open once the server has closed.
    this.timer.unref();
  }

  /** Opens a stream for one tab; it ends when the tab goes or the server closes. */
  async add(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive' });
    res.write(`retry: 2000\nevent: runs\ndata: ${JSON.stringify({ version: this.runs.version })}\n\n`);
    this.clients.add(res);
    this.onClients(this.clients.size);
    req.on('close', () => {
      if (this.clients.delete(res)) this.onClients(this.clients.size);
    });
    // The source refreshes while someone reads it: this first read starts it for a tab that only listens.
    await this.runs.list().catch(() => undefined);
  }

  close(): void {
    clearInterval(this.timer);
    this.runs.off('change', this.onChange);
    for (const res of this.clients) res.end();
    this.clients.clear();
    this.onClients(0);
  }
}
