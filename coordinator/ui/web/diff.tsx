import type { JSX } from 'preact';

/** The class of a unified diff line: added, removed, a hunk header, a file header, or context. */
export function diffClass(line: string): string {
  if (line.startsWith('+++') || line.startsWith('---') || line.startsWith('diff --git') || line.startsWith('index ')) return 'diff-file';
  if (line.startsWith('@@')) return 'diff-hunk';
  if (line.startsWith('+')) return 'diff-add';
  if (line.startsWith('-')) return 'diff-del';
  return 'diff-ctx';
}

/** The run's uncommitted change as a diff: one text line each, coloured by its class. */
export function DiffView({ text, cut }: { text: string; cut: boolean }): JSX.Element {
  if (text === '') return <p class="muted" data-testid="diff">No uncommitted change: the run ran the commit as it is.</p>;
  const lines = text.endsWith('\n') ? text.slice(0, -1).split('\n') : text.split('\n');
  return (
    <div>
      <pre class="diff" data-testid="diff">
        {lines.map((l, i) => (
          <div key={i} class={diffClass(l)}>
            {l === '' ? ' ' : l}
          </div>
        ))}
      </pre>
      {cut && <p class="muted">The diff is longer than 2 MB: the rest is not shown.</p>}
    </div>
  );
}
