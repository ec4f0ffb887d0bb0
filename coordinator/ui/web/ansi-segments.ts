import Anser from 'anser';

/** A run of text in one style. `text` is shown as a text node: it is never parsed as markup. */
export interface AnsiSegment {
  text: string;
  /** CSS colours, `rgb(r, g, b)`; absent for the default. */
  color?: string;
  background?: string;
  bold?: boolean;
  dim?: boolean;
  italic?: boolean;
  underline?: boolean;
}

// Escapes anser leaves in the text: OSC (window titles, hyperlinks), and any other ESC sequence.
const OSC = /\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?/g;
const OTHER_ESC = /\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])?/g;
// C0 controls but tab (a bell, a backspace) show as nothing.
const CONTROLS = /[\x00-\x08\x0b-\x1f\x7f]/g;

/** anser's colours are `r, g, b`; anything else is dropped rather than passed to CSS. */
function rgb(value: string | null | undefined): string | undefined {
  return value && /^\d{1,3}, \d{1,3}, \d{1,3}$/.test(value) ? `rgb(${value})` : undefined;
}

/**
 * One line of terminal output as styled segments: SGR colours and weights become styles (anser,
 * as JSON, never its HTML), every other escape and control character is removed, and a carriage
 * return keeps what was written after it, as a terminal shows a progress bar.
 */
export function ansiSegments(line: string): AnsiSegment[] {
  const cr = line.lastIndexOf('\r', line.endsWith('\r') ? line.length - 2 : line.length);
  // Colours set before the `\r` still apply after it: keep the escapes, drop the overwritten text.
  const shown = cr < 0 ? line : (line.slice(0, cr).match(/\x1b\[[0-9;]*m/g) ?? []).join('') + line.slice(cr + 1);
  const out: AnsiSegment[] = [];
  for (const e of Anser.ansiToJson(shown.replace(OSC, ''), { json: true, remove_empty: true })) {
    const text = e.content.replace(OSC, '').replace(OTHER_ESC, '').replace(CONTROLS, '');
    if (text === '') continue;
    const color = rgb(e.fg_truecolor || e.fg);
    const background = rgb(e.bg_truecolor || e.bg);
    const d = new Set(e.decorations);
    out.push({
      text,
      ...(color ? { color } : {}),
      ...(background ? { background } : {}),
      ...(d.has('bold') ? { bold: true } : {}),
      ...(d.has('dim') ? { dim: true } : {}),
      ...(d.has('italic') ? { italic: true } : {}),
      ...(d.has('underline') ? { underline: true } : {}),
    });
  }
  return out;
}

/**
 * Cuts streamed text into whole lines: `push` returns the lines completed by a piece of output;
 * the unfinished rest waits for the next piece (or `rest()` once the output has ended).
 */
export class LineSplitter {
  private partial = '';

  push(text: string): string[] {
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    return lines;
  }

  rest(): string {
    return this.partial;
  }
}
