import type { Context } from '../context.js';
import type { Output } from '../output.js';
import { HttpError } from './http.js';

/**
 * A Context for one action from the page: the command's lines are collected for the answer instead
 * of printed, and its confirmation is the dialog the user already answered. Owner rules are the
 * CLI's own: the commands below are the CLI's, called without --force.
 */
function actionContext(ctx: Context): { ctx: Context; lines: string[] } {
  const lines: string[] = [];
  const out: Output = {
    isTTY: false,
    line: (text = '') => void lines.push(text),
    raw: () => undefined,
    note: (text) => void lines.push(text),
    json: () => undefined,
    table: () => undefined,
    progress: () => ({ update: () => undefined, done: () => undefined }),
  };
  return { ctx: { ...ctx, out, confirm: () => Promise.resolve(true) }, lines };
}

/** The answer to an action: whether the command succeeded, and what it said. */
export interface ActionResult {
  ok: boolean;
  message: string;
}

/** `POST /api/runs/:run/stop` (`{abort?: boolean}`): `dstack stop RUN [-x] -y`. */
export async function stopAction(ctx: Context, runName: string, body: Record<string, unknown>): Promise<ActionResult> {
  const { stopCommand } = await import('../commands/stop.js');
  const a = actionContext(ctx);
  const code = await stopCommand(a.ctx, { run: runName, all: false, abort: body.abort === true, yes: true, force: false });
  return { ok: code === 0, message: a.lines.join('\n') };
}

/** `POST /api/runs/:run/restart`: `dstack restart RUN -d`; `runName` is the new run's (the page opens it). */
export async function restartAction(ctx: Context, runName: string): Promise<ActionResult & { runName: string | null }> {
  const { restartRun } = await import('../commands/restart.js');
  const a = actionContext(ctx);
  const r = await restartRun(a.ctx, { run: runName, detach: true, waitForLink: false, force: false });
  return { ok: r.code === 0, message: a.lines.join('\n'), runName: r.runName };
}

/** `POST /api/runs/:run/tag` (`{tag}`): `dstack tags add TAG RUN`. */
export async function tagAction(ctx: Context, runName: string, body: Record<string, unknown>): Promise<ActionResult> {
  if (typeof body.tag !== 'string' || body.tag.trim() === '') throw new HttpError(400, 'give a tag name: {"tag": "NAME"}');
  const { tagsAddCommand } = await import('../commands/tags.js');
  const a = actionContext(ctx);
  const code = await tagsAddCommand(a.ctx, { tag: body.tag.trim(), run: runName, paths: [] });
  return { ok: code === 0, message: a.lines.join('\n') };
}
