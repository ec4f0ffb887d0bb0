import { toError } from '../common/errors.js';
import { loadWorkflows, type LocatedWorkflow } from '../common/spec/load.js';
import { repoInfo } from './code-capture.js';

/** Edit distance: insertions, deletions, substitutions and swaps of two neighbours (trian → train), one each. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  const at = (i: number, j: number): number => d[i]?.[j] ?? 0;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, at(i - 2, j - 2) + 1);
      const row = d[i];
      if (row) row[j] = best;
    }
  }
  return at(a.length, b.length);
}

/** The closest name to a mistyped one, if it is close enough to be a typo (about a third of it wrong at most). */
export function didYouMean(name: string, names: Iterable<string>): string | undefined {
  let best: { name: string; distance: number } | undefined;
  for (const candidate of names) {
    const distance = editDistance(name.toLowerCase(), candidate.toLowerCase());
    if (distance <= Math.max(1, Math.floor(candidate.length / 3)) && (best === undefined || distance < best.distance)) best = { name: candidate, distance };
  }
  return best?.name;
}

/** Workflow names with their `help:`, one a line, aligned. */
export function formatWorkflowList(workflows: Iterable<LocatedWorkflow>): string {
  const rows = [...workflows].map((w) => [w.workflow.name, w.workflow.help ?? ''] as const).sort(([a], [b]) => a.localeCompare(b));
  const width = Math.max(0, ...rows.map(([name]) => name.length));
  return rows.map(([name, help]) => `  ${help ? `${name.padEnd(width)}  ${help}` : name}`).join('\n');
}

/** What `dstack run` without a workflow says: how to call it, and the workflows it could run. */
export async function noWorkflowMessage(cwd: string): Promise<string> {
  const usage = 'name a workflow: dstack run WORKFLOW [ARGS...]';
  try {
    const workflows = await loadWorkflows((await repoInfo(cwd)).root);
    return `${usage}\nWorkflows:\n${formatWorkflowList(workflows.values())}`;
  } catch (e) {
    return `${usage}\n${toError(e).message}`;
  }
}

/** The names of the repo's workflows, sorted; none when they cannot be read (for completion). */
export async function workflowNames(cwd: string): Promise<string[]> {
  try {
    return [...(await loadWorkflows((await repoInfo(cwd)).root)).keys()].sort();
  } catch {
    return [];
  }
}
