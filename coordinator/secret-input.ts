import { UsageError } from '../common/errors.js';

/**
 * Reads a secret value without echoing it: on a terminal, a line typed after `prompt` (on stderr)
 * with echo off; otherwise all of stdin, less one final newline (`echo $TOKEN | dstack secrets add X`).
 */
export async function readSecretValue(stdin: NodeJS.ReadStream, stderr: NodeJS.WriteStream, prompt: string): Promise<string> {
  if (!stdin.isTTY) {
    const parts: Buffer[] = [];
    for await (const chunk of stdin) parts.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
    return Buffer.concat(parts).toString('utf8').replace(/\r?\n$/, '');
  }
  // Echo off before the prompt shows: what is typed after it is never echoed.
  stdin.setRawMode(true);
  stderr.write(prompt);
  stdin.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let value = '';
      const onData = (d: Buffer): void => {
        for (const ch of d.toString('utf8')) {
          if (ch === '\r' || ch === '\n') {
            stdin.off('data', onData);
            resolve(value);
            return;
          }
          if (ch === '\u0003') {
            stdin.off('data', onData);
            reject(new UsageError('cancelled'));
            return;
          }
          if (ch === '\u007f' || ch === '\b') value = [...value].slice(0, -1).join('');
          else value += ch;
        }
      };
      stdin.on('data', onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
    stderr.write('\n');
  }
}
