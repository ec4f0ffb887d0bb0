import type { JSX } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { LogView } from './ansi.js';
import { getJson, onEvent, postJson, seg, type RunDetail } from './api.js';
import { ActionAnswerSchema, RunDetailSchema } from './schemas.js';
import { DiffView } from './diff.js';
import { formatCost, formatDuration } from './format.js';
import { WEB_LINK, shown } from './links.js';
import { ArtifactsView, AttemptsTimeline, ConfirmDialog, useLogs } from './run-parts.js';
import { StatusBadge } from './runs.js';

type Action = 'stop' | 'restart' | 'tag';

const FINISHED = new Set(['done', 'failed', 'stopped']);

/**
 * The Run page: status and buttons, the resolved spec, the code snapshot and its diff, deps,
 * attempts, live logs and artifacts. It refetches the run when the server says it changed.
 */
export function RunPage({ runName }: { runName: string }): JSX.Element {
  const [detail, setDetail] = useState<RunDetail | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [version, setVersion] = useState(0);
  const [asking, setAsking] = useState<Action | null>(null);
  const [tag, setTag] = useState('');
  const [notice, setNotice] = useState<string | null>(null);
  const logs = useLogs(runName);
  /** Whether the run had ended when the page first read it: then nothing about it changes any more. */
  const finishedAtFirst = useRef<boolean | undefined>(undefined);

  // The server names the runs that changed: this one is read again only when it is named (another
  // run's change would cost this run's attempts and tags for nothing).
  useEffect(() => onEvent('run', (d) => d.runName === runName && setVersion((v) => v + 1)), [runName]);
  useEffect(() => {
    let live = true;
    getJson(`api/runs/${seg(runName)}`, RunDetailSchema).then(
      (d) => {
        if (!live) return;
        finishedAtFirst.current ??= FINISHED.has(d.run.status);
        setDetail(d);
        setError(null);
      },
      (e: unknown) => live && setError(e instanceof Error ? e.message : String(e)),
    );
    return () => {
      live = false;
    };
  }, [runName, version]);
  // The output's end usually comes with the final status: fetch the run once more then, unless it
  // had already ended when the page opened (its first answer holds the final status already).
  useEffect(() => {
    if (!logs.following && finishedAtFirst.current === false) setVersion((v) => v + 1);
  }, [logs.following]);

  const act = async (action: Action): Promise<void> => {
    setNotice(`${action}…`);
    try {
      const body = action === 'tag' ? { tag } : {};
      const r = await postJson(`api/runs/${seg(runName)}/${action}`, body, ActionAnswerSchema);
      setNotice(r.message || (r.ok ? 'Done.' : 'The command did not succeed.'));
      if (action === 'restart' && r.runName) location.hash = `#/run/${encodeURIComponent(r.runName)}`;
    } catch (e) {
      setNotice(e instanceof Error ? e.message : String(e));
    }
    setVersion((v) => v + 1);
  };

  if (error && !detail) return <p class="error">{error}</p>;
  if (!detail) return <p class="muted">Loading {runName}…</p>;
  const r = detail.run;
  const finished = FINISHED.has(r.status);
  const questions: Record<Action, string> = {
    stop: `Stop the run ${runName}? Its job gets SIGTERM, then SIGKILL after the grace period.`,
    restart: `Run ${runName} again, with the same code, spec and pinned deps, under a new name?`,
    tag: `Tag the run ${runName}:`,
  };
  return (
    <section>
      <h1>
        {runName} <span data-testid="status"><StatusBadge status={r.status} /></span>
      </h1>
      <p class="muted">
        {[
          r.workflow,
          `attempt ${r.attempt ?? '-'} of ${r.maxAttempts}`,
          r.durationMs === null ? null : formatDuration(r.durationMs),
          r.instance,
          r.costUsd === null ? null : formatCost(r.costUsd),
          r.owner,
          r.tag === null ? null : `tag ${r.tag}`,
        ]
          .filter((x): x is string => x !== null)
          .join(' · ')}
        {detail.restartOf && (
          <>
            {' · restart of '}
            <a href={`#/run/${encodeURIComponent(detail.restartOf)}`}>{detail.restartOf}</a>
          </>
        )}
      </p>
      <div class="actions">
        <button data-action="stop" disabled={finished} onClick={() => setAsking('stop')}>
          Stop
        </button>
        <button data-action="restart" onClick={() => setAsking('restart')}>
          Restart
        </button>
        <button data-action="tag" disabled={r.status !== 'done'} title={r.status === 'done' ? '' : 'Only a successful run can be tagged'} onClick={() => setAsking('tag')}>
          Tag
        </button>
        {notice && <span class="notice">{notice}</span>}
      </div>
      {asking && (
        <ConfirmDialog
          question={questions[asking]}
          onAnswer={(yes) => {
            const action = asking;
            setAsking(null);
            if (yes) void act(action);
          }}
        >
          {asking === 'tag' ? <input data-testid="tag-name" placeholder="tag name" value={tag} onInput={(e) => setTag(e.currentTarget.value)} /> : undefined}
        </ConfirmDialog>
      )}
      {detail.links.length > 0 && (
        <>
          <h2>Links</h2>
          <ul>
            {detail.links.map((l) => (
              <li key={l.url}>
                {WEB_LINK.test(l.url) ? (
                  <a href={l.url} target="_blank" rel="noopener noreferrer" data-link={l.kind}>
                    {shown(l.url)}
                  </a>
                ) : (
                  l.url
                )}
              </li>
            ))}
          </ul>
        </>
      )}
      <h2>Logs</h2>
      <LogView lines={logs.lines} dropped={logs.dropped} following={logs.following} />
      <h2>Attempts</h2>
      <AttemptsTimeline attempts={detail.attempts} nowMs={Date.now()} />
      <h2>Artifacts</h2>
      <ArtifactsView detail={detail} />
      <h2>Code</h2>
      <p>
        {'Commit '}
        <code>{detail.code.commit ?? '(none)'}</code>
        {' on branch '}
        <code>{detail.code.branch ?? '(none)'}</code>
      </p>
      <DiffView text={detail.code.diff} cut={detail.code.diffCut} />
      <h2>Deps</h2>
      {detail.deps.length === 0 ? (
        <p class="muted">No deps.</p>
      ) : (
        <ul data-testid="deps">
          {detail.deps.map((d) => (
            <li key={`${d.kind}:${d.name}`}>
              {`${d.kind === 'tag' ? ':' : ''}${d.name} → `}
              {d.runName ? <a href={`#/run/${encodeURIComponent(d.runName)}`}>{d.runName}</a> : 'not pinned'}
              {d.artifacts.length > 0 && <span class="muted">{` (${d.artifacts.join(', ')})`}</span>}
            </li>
          ))}
        </ul>
      )}
      <h3>Runs shown that depend on this one</h3>
      {detail.dependents.length === 0 ? (
        <p class="muted">None among the runs opened here (finished runs are not read to find them).</p>
      ) : (
        <ul data-testid="dependents">
          {detail.dependents.map((d) => (
            <li key={d}>
              <a href={`#/run/${encodeURIComponent(d)}`}>{d}</a>
            </li>
          ))}
        </ul>
      )}
      <h2>Spec</h2>
      {detail.overrides.length > 0 && <p>{`Overrides: ${detail.overrides.join(' ')}`}</p>}
      <pre class="spec" data-testid="spec">
        {JSON.stringify(detail.spec, null, 2)}
      </pre>
    </section>
  );
}
