import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CORPUS, ROOT } from './cli.js';

export interface CorpusFile {
  file: string;
  /** Where the file lives in its repo, e.g. `.dstack/workflows/apps.yaml`. */
  path: string;
  era: 'hosted-2022' | 'oss-0.0.x' | '0.1-2023';
  text: string;
}

/** Our own workflow files, written for these tests; always there. */
export const OWN_CORPUS = join(ROOT, 'test', 'fixtures', 'workflows');
/** The shared corpus of real 2022 files, beside the repo in CI; absent in a plain clone. */
export const SHARED_CORPUS = CORPUS;

/** Whether the shared corpus is beside the repo. */
export function hasSharedCorpus(): boolean {
  return existsSync(join(SHARED_CORPUS, 'README.md'));
}

/** Our own workflow files, with the era the fixtures' README gives each. */
export function ownCorpus(): CorpusFile[] {
  return readCorpus(OWN_CORPUS);
}

/** The shared corpus of real 2022 workflow files, or none when it is not beside the repo. */
export function sharedCorpus(): CorpusFile[] {
  return hasSharedCorpus() ? readCorpus(SHARED_CORPUS) : [];
}

/** Reads a corpus directory through the table in its README (columns found by their header: file, path, era). */
export function readCorpus(dir: string): CorpusFile[] {
  const rows = readFileSync(join(dir, 'README.md'), 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('| '))
    .map((row) => row.split('|').map((c) => c.trim()));
  const header = rows.find((cells) => cells.includes('file') && cells.includes('era')) ?? [];
  const column = (name: string): number => header.indexOf(name);
  return rows
    .filter((cells) => (cells[column('file')] ?? '').endsWith('.yaml'))
    .map((cells) => {
      const file = cells[column('file')] ?? '';
      return {
        file,
        path: (cells[column('path')] ?? '').replace(/`/g, ''),
        era: (cells[column('era')] ?? '') as CorpusFile['era'],
        text: readFileSync(join(dir, file), 'utf8'),
      };
    });
}

/**
 * The corpus's dev-environments.yaml (dstack-examples at f8c6f11) when the shared corpus is there;
 * in a clone with nothing beside it, the same four workflows as written here, so the dev-environment
 * tests still run.
 */
export function devEnvironmentsYaml(): string {
  const file = join(SHARED_CORPUS, 'dstackai-dstack-examples__f8c6f11__6.yaml');
  if (existsSync(file)) return readFileSync(file, 'utf8');
  return [
    'workflows:',
    '  - name: ide-code',
    '    provider: code',
    '  - name: ide-code-gpu',
    '    provider: code',
    '    resources:',
    '      memory: 64GB',
    '      gpu: 1',
    '  - name: ide-lab',
    '    provider: lab',
    '  - name: ide-notebook',
    '    provider: notebook',
    '',
  ].join('\n');
}
