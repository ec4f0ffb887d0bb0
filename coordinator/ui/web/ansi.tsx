import type { CSSProperties, JSX } from 'preact';
import { ansiSegments, type AnsiSegment } from './ansi-segments.js';

function styleOf(s: AnsiSegment): CSSProperties | undefined {
  if (!s.color && !s.background && !s.bold && !s.dim && !s.italic && !s.underline) return undefined;
  return {
    ...(s.color ? { color: s.color } : {}),
    ...(s.background ? { backgroundColor: s.background } : {}),
    ...(s.bold ? { fontWeight: 'bold' } : {}),
    ...(s.dim ? { opacity: 0.6 } : {}),
    ...(s.italic ? { fontStyle: 'italic' } : {}),
    ...(s.underline ? { textDecoration: 'underline' } : {}),
  };
}

/**
 * One line of job output with its ANSI colours: each segment is a text node, plain or in a styled
 * span, so a `<script>` in the output is shown, never run.
 */
export function AnsiLine({ text, stream }: { text: string; stream: 'out' | 'err' }): JSX.Element {
  return (
    <div class={stream === 'err' ? 'log-line log-err' : 'log-line'}>
      {ansiSegments(text).map((s, i) => {
        const style = styleOf(s);
        return style ? (
          <span key={i} style={style}>
            {s.text}
          </span>
        ) : (
          s.text
        );
      })}
    </div>
  );
}

/** A line of the log view: its stream and its raw text (escapes still in it). */
export interface LogLine {
  stream: 'out' | 'err';
  text: string;
}

/** The run's output, line by line, in a scrolling box that stays at the bottom while the user has not scrolled up. */
export function LogView({ lines, dropped, following }: { lines: LogLine[]; dropped: number; following: boolean }): JSX.Element {
  const stick = (el: HTMLPreElement | null): void => {
    if (el && el.scrollHeight - el.scrollTop - el.clientHeight < 80) el.scrollTop = el.scrollHeight;
  };
  return (
    <div class="logs-box">
      {dropped > 0 && <p class="muted">{`The first ${dropped} lines are not shown: \`dstack logs\` prints all of them.`}</p>}
      <pre class="logs" data-testid="logs" ref={stick}>
        {lines.map((l, i) => (
          <AnsiLine key={i} text={l.text} stream={l.stream} />
        ))}
      </pre>
      <p class="muted">{following ? 'Following the output…' : lines.length === 0 ? 'No output.' : 'End of output.'}</p>
    </div>
  );
}
