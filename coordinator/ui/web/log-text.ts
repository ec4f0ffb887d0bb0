/** The bytes of a base64 string (the logs API sends each record's bytes so). */
function bytesOf(base64: string): Uint8Array {
  const bin = atob(base64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * One output stream's text, record by record: a character whose bytes are split across two
 * records is held back until its end comes, instead of showing as two replacement characters.
 */
export class StreamText {
  private readonly decoder = new TextDecoder('utf-8');

  /** The text that a record's bytes (base64) complete. */
  push(base64: string): string {
    return this.decoder.decode(bytesOf(base64), { stream: true });
  }

  /** What is held back at the end of the output (a cut character shows as U+FFFD). */
  end(): string {
    return this.decoder.decode();
  }
}
