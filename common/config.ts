import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LineCounter, parseDocument, isMap, isSeq, type Node } from 'yaml';
import { z } from 'zod';
import { ConfigError, errnoCode, formatProblem } from './errors.js';

const LocalSchema = z.strictObject({
  /** Local agents (and so jobs) that may run at once. */
  maxParallelJobs: z.number().int().min(1).max(64).default(2),
  /** An idle local agent exits after this long. */
  agentIdleTimeoutSec: z.number().min(1).default(300),
  /** Lease on a received job; the agent renews it while the job runs. */
  visibilityTimeoutSec: z.number().min(1).max(43200).default(30),
  /** Deliveries of a job before it is given up (and dead-lettered). */
  maxAttempts: z.number().int().min(1).max(100).default(3),
  /** Between SIGTERM and SIGKILL when a job is stopped. */
  stopGraceSec: z.number().min(0).max(3600).default(10),
  /** How often `mount: true` artifacts are saved while a job runs. */
  artifactSyncSec: z.number().min(1).max(3600).default(30),
});

export const ConfigSchema = z.strictObject({
  backend: z.enum(['local', 'aws']).default('local'),
  local: LocalSchema.default(() => LocalSchema.parse({})),
});

export type DstackConfig = z.output<typeof ConfigSchema> & {
  /** The dstack home directory (`~/.dstack` unless DSTACK_HOME says otherwise). */
  home: string;
};

/** Reads `<home>/config.yaml` (optional). Problems are reported as `file:line:col: message`. */
export async function loadConfig(home: string): Promise<DstackConfig> {
  const file = join(home, 'config.yaml');
  let text = '';
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw new ConfigError(`cannot read ${file}: ${(e as Error).message}`);
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (doc.errors[0]) {
    const pos = doc.errors[0].linePos?.[0] ?? { line: 1, col: 1 };
    throw new ConfigError(formatProblem({ file, ...pos, message: `invalid YAML: ${doc.errors[0].message.split('\n')[0] ?? ''}` }));
  }
  const result = ConfigSchema.safeParse(doc.toJS() ?? {});
  if (!result.success) {
    const lines2 = result.error.issues.map((issue) => {
      const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
      let node: unknown = doc.contents;
      for (const seg of path) node = isMap(node) || isSeq(node) ? node.get(seg, true) : node;
      const pos = lines.linePos((node as Node | null)?.range?.[0] ?? 0);
      return formatProblem({ file, line: pos.line, col: pos.col, message: `\`${path.join('.')}\`: ${issue.message}` });
    });
    throw new ConfigError(lines2.join('\n'));
  }
  return { ...result.data, home };
}
