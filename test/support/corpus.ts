import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CORPUS } from './cli.js';

export interface CorpusFile {
  file: string;
  /** Where the file lived in its repo, e.g. `.dstack/workflows/apps.yaml`. */
  path: string;
  era: 'hosted-2022' | 'oss-0.0.x' | '0.1-2023';
  text: string;
}

/** The shared corpus of real 2022 workflow files, with the era its README gives each. */
export function corpus(): CorpusFile[] {
  const readme = readFileSync(join(CORPUS, 'README.md'), 'utf8');
  const rows = readme.split('\n').filter((l) => l.startsWith('| ') && l.includes('.yaml |'));
  return rows.map((row) => {
    const cells = row.split('|').map((c) => c.trim());
    const file = cells[1] ?? '';
    return {
      file,
      path: (cells[3] ?? '').replace(/`/g, ''),
      era: (cells[5] ?? '') as CorpusFile['era'],
      text: readFileSync(join(CORPUS, file), 'utf8'),
    };
  });
}
