import type { JSX } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { LogLine } from './ansi.js';
import { LineSplitter } from './ansi-segments.js';
import { getJson, seg, type Attempt, type RunDetail } from './api.js';
import { formatBytes, formatDuration } from './format.js';
import { StreamText } from './log-text.js';
import { LogsSchema, TreeSchema, type LogsJson } from './schemas.js';

type TreeEntry = { path: string; type: 'file' | 'dir' | 'symlink'; sizeBytes: number };

/** Lines kept on the page; older ones are dropped (and the page says how many). */
const MAX_LINES = 10_000;

/**
 * Follows a run's output: asks for what is new since the cursor, again every second until the
 * server says the run has ended and every chunk is read. Each stream's bytes are decoded as one
 * whole (a character may span two records), then cut into lines where the output has `\n`.
 */
export function useLogs(runName: string): { lines: LogLine[]; dropped: number; following: boolean } {
  const [state, setState] = useState({ lines: [] as LogLine[], dropped: 0, following: true });
  useEffect(() => {
    let live = true;
    let cursor: string | null = null;
    const split = { out: new LineSplitter(), err: new LineSplitter() };
    const decode = { out: new StreamText(), err: new StreamText() };
    let lines: LogLine[] = [];
    let dropped = 0;
    const loop = async (): Promise<void> => {
      while (live) {
        let answer: LogsJson | undefined;
        try {
          answer = await getJson(`api/runs/${seg(runName)}/logs${cursor === null ? '' : `?after=${seg(cursor)}`}`, LogsSchema);
        } catch {
          answer = undefined;
        }
        if (!live) return;
        if (answer) {
          cursor = answer.cursor;
          const added: LogLine[] = [];
          for (const r of answer.records) for (const text of split[r.stream].push(decode[r.stream].push(r.data))) added.push({ stream: r.stream, text });
          if (answer.done) {
            for (const stream of ['out', 'err'] as const) {
              for (const text of split[stream].push(decode[stream].end())) added.push({ stream, text });
              if (split[stream].rest() !== '') added.push({ stream, text: split[stream].rest() });
            }
          }
          lines = lines.concat(added);
          if (lines.length > MAX_LINES) {
            dropped += lines.length - MAX_LINES;
            lines = lines.slice(lines.length - MAX_LINES);
          }
          setState({ lines, dropped, following: !answer.done });
          if (answer.done) return;
          // More chunks may be waiting (a long log arrives in several answers): ask again at once.
          if (answer.records.length > 0 && answer.cursor !== null) continue;
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    };
    void loop();
    return () => {
      live = false;
    };
  }, [runName]);
  return state;
}

/** A modal question with yes and no; `children` may hold an input (the tag name). */
export function ConfirmDialog({ question, children, onAnswer }: { question: string; children?: JSX.Element; onAnswer: (yes: boolean) => void }): JSX.Element {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    if (ref.current && !ref.current.open) ref.current.showModal();
  }, []);
  return (
    <dialog data-testid="confirm" ref={ref} onCancel={() => onAnswer(false)}>
      <p>{question}</p>
      {children}
      <div class="dialog-buttons">
        <button data-confirm="no" onClick={() => onAnswer(false)}>
          Cancel
        </button>
        <button data-confirm="yes" class="primary" onClick={() => onAnswer(true)}>
          Yes
        </button>
      </div>
    </dialog>
  );
}

/** The attempts as bars on one time axis: where each ran, spot or on-demand, when, and why it ended. */
export function AttemptsTimeline({ attempts, nowMs }: { attempts: Attempt[]; nowMs: number }): JSX.Element {
  if (attempts.length === 0) return <p class="muted" data-testid="attempts">No attempt yet: the run waits for an agent.</p>;
  const start = Math.min(...attempts.map((a) => Date.parse(a.startedAt)));
  const end = Math.max(...attempts.map((a) => (a.endedAt ? Date.parse(a.endedAt) : nowMs)), start + 1);
  return (
    <div class="timeline" data-testid="attempts">
      {attempts.map((a) => {
        const from = Date.parse(a.startedAt);
        const to = a.endedAt ? Date.parse(a.endedAt) : nowMs;
        const left = ((from - start) / (end - start)) * 100;
        const width = Math.max(1, ((to - from) / (end - start)) * 100);
        return (
          <div key={a.attempt} class="timeline-row" data-attempt={a.attempt}>
            <span class="timeline-label">{`#${a.attempt} ${a.instance ?? a.agent}${a.market ? ` · ${a.market}` : ''}`}</span>
            <span class="timeline-track">
              <span class={`timeline-bar${a.endedAt ? '' : ' timeline-live'}`} style={{ left: `${left}%`, width: `${width}%` }} />
            </span>
            <span class="timeline-info">
              {`${new Date(from).toLocaleTimeString()} – ${a.endedAt ? new Date(to).toLocaleTimeString() : 'now'} (${formatDuration(to - from)})${a.reason ? ` · ${a.reason}` : ''}${a.exitCode === null ? '' : ` · exit ${a.exitCode}`}`}
            </span>
          </div>
        );
      })}
    </div>
  );
}

/** Entries shown per artifact; a larger tree is downloaded as a tar.gz. */
const MAX_ENTRIES = 500;

function ArtifactTree({ runName, index, path }: { runName: string; index: number; path: string }): JSX.Element {
  const [entries, setEntries] = useState<TreeEntry[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    getJson(`api/runs/${seg(runName)}/artifacts/${index}/tree`, TreeSchema).then(
      (t) => setEntries(t.entries),
      (e: unknown) => setError(e instanceof Error ? e.message : String(e)),
    );
  }, [runName, index]);
  const base = `api/runs/${seg(runName)}/artifacts/${index}/download`;
  if (error) return <p class="error">{error}</p>;
  if (!entries) return <p class="muted">Loading…</p>;
  return (
    <ul class="tree">
      {entries.slice(0, MAX_ENTRIES).map((e) => (
        <li key={e.path} class={`tree-${e.type}`} style={{ paddingLeft: `${(e.path.split('/').length - 1) * 1.2}em` }}>
          {e.type === 'file' ? (
            <a href={`${base}?path=${seg(e.path)}`} data-download={e.path} data-artifact={path} download>
              {e.path.split('/').pop()}
            </a>
          ) : e.type === 'dir' ? (
            <span>
              {`${e.path.split('/').pop() ?? ''}/ `}
              <a href={`${base}?path=${seg(e.path)}&tar=1`} data-download-tar={e.path} download>
                tar.gz
              </a>
            </span>
          ) : (
            <span>{`${e.path.split('/').pop() ?? ''} (link)`}</span>
          )}
          {e.type === 'file' && <span class="muted">{` ${formatBytes(e.sizeBytes)}`}</span>}
        </li>
      ))}
      {entries.length > MAX_ENTRIES && <li class="muted">{`… ${entries.length - MAX_ENTRIES} more: download the whole artifact`}</li>}
    </ul>
  );
}

/** The saved artifacts with their trees, each file a download link, each folder a tar.gz. */
export function ArtifactsView({ detail }: { detail: RunDetail }): JSX.Element {
  const name = detail.run.runName;
  return (
    <div data-testid="artifacts">
      {detail.artifacts.length === 0 && <p class="muted">No saved artifacts.</p>}
      {!detail.artifactsComplete && <p class="muted">Still being saved: the tree may grow.</p>}
      {detail.artifacts.map((a) => (
        <div key={a.index} class="artifact">
          <h3>
            {a.path} <span class="muted">{`${a.files} files, ${formatBytes(a.sizeBytes)} `}</span>
            <a href={`api/runs/${seg(name)}/artifacts/${a.index}/download?path=&tar=1`} download>
              download all (tar.gz)
            </a>
          </h3>
          <ArtifactTree runName={name} index={a.index} path={a.path} />
        </div>
      ))}
    </div>
  );
}
