/** One piece of a job's output as stored: time (ISO), stream and text. */
export interface LogRecord {
  t: string;
  s: 'out' | 'err';
  d: string;
}

/** Parses a stored JSON-lines chunk back into records. */
export function parseLogChunk(text: string): LogRecord[] {
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as LogRecord);
}
