import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { LineCounter, isMap, isScalar, isSeq, parseDocument, type Document, type Node, type YAMLMap } from 'yaml';
import type { z } from 'zod';
import { NotFoundError, SpecError, errnoCode, type SpecProblem } from '../errors.js';
import { findHostedForms, findUnknownVariables } from './legacy.js';
import { WorkflowSchema, type ParsedWorkflow } from './schema.js';

/** A validated workflow and where it was defined. */
export interface LocatedWorkflow {
  workflow: ParsedWorkflow;
  file: string;
  line: number;
}

/** Lists the workflow files of a repo: `.dstack/workflows.yaml` and `.dstack/workflows/*.y(a)ml`, in a stable order. */
export async function workflowFiles(repoRoot: string): Promise<string[]> {
  const files: string[] = [];
  for (const name of ['workflows.yaml', 'workflows.yml']) {
    try {
      await readFile(join(repoRoot, '.dstack', name));
      files.push(join(repoRoot, '.dstack', name));
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
  }
  try {
    const names = (await readdir(join(repoRoot, '.dstack', 'workflows'))).filter((n) => /\.ya?ml$/.test(n)).sort();
    files.push(...names.map((n) => join(repoRoot, '.dstack', 'workflows', n)));
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT' && errnoCode(e) !== 'ENOTDIR') throw e;
  }
  return files;
}

/** Reads and validates every workflow file of a repo. Throws SpecError listing every problem found. */
export async function loadWorkflows(repoRoot: string): Promise<Map<string, LocatedWorkflow>> {
  const files = await workflowFiles(repoRoot);
  if (files.length === 0) {
    throw new NotFoundError(`no workflows found in ${repoRoot}: create .dstack/workflows.yaml (see \`dstack init\`)`);
  }
  const problems: SpecProblem[] = [];
  const byName = new Map<string, LocatedWorkflow>();
  for (const file of files) {
    const shown = relative(process.cwd(), file) || file;
    const text = await readFile(file, 'utf8');
    for (const located of parseWorkflowsText(text, shown, problems)) {
      const first = byName.get(located.workflow.name);
      if (first) {
        problems.push({
          file: shown,
          line: located.line,
          col: 1,
          message: `workflow \`${located.workflow.name}\` is already defined at ${first.file}:${first.line}: rename one of them`,
        });
      } else {
        byName.set(located.workflow.name, located);
      }
    }
  }
  if (problems.length > 0) throw new SpecError(problems);
  return byName;
}

/** Parses one workflows file's text; appends problems (file:line:col) and returns the valid workflows. */
export function parseWorkflowsText(text: string, file: string, problems: SpecProblem[]): LocatedWorkflow[] {
  const found: SpecProblem[] = [];
  const workflows = parseInto(text, file, found);
  problems.push(...found.sort((a, b) => a.line - b.line || a.col - b.col));
  return workflows;
}

function parseInto(text: string, file: string, problems: SpecProblem[]): LocatedWorkflow[] {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const at = (node: Node | null | undefined, fallback = 0): { line: number; col: number } => {
    const pos = lines.linePos(node?.range?.[0] ?? fallback);
    return { line: pos.line, col: pos.col };
  };
  const report = (node: Node | null | undefined, message: string): void => {
    problems.push({ file, ...at(node), message });
  };

  if (doc.errors.length > 0) {
    for (const err of doc.errors) {
      // With prettyErrors off, `linePos` is empty; `pos` is the offset, which the LineCounter maps.
      const pos = lines.linePos(err.pos[0]);
      const first = (err.message.split('\n')[0] ?? err.message).replace(/ at line \d+, column \d+:?$/, '');
      problems.push({ file, line: pos.line, col: pos.col, message: `invalid YAML: ${first}` });
    }
    return [];
  }
  const root = doc.contents;
  if (!isMap(root)) {
    report(root, 'expected a map with a `workflows:` list at the top');
    return [];
  }
  for (const pair of root.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : '';
    if (key === 'variables') {
      report(pair.key as Node, '`variables` is from the hosted 2022 format: pass values with `dstack run WORKFLOW ARGS` and use `${{ run.args }}`');
    } else if (key !== 'workflows') {
      report(pair.key as Node, `unknown top-level key \`${key}\`: a workflows file has only \`workflows:\``);
    }
  }
  const list = root.get('workflows', true);
  if (!isSeq(list)) {
    report(list ?? root, 'expected a list of workflows under `workflows:`');
    return [];
  }
  for (const finding of findUnknownVariables(doc)) report(finding.node, finding.message);

  const out: LocatedWorkflow[] = [];
  list.items.forEach((item) => {
    if (!isMap(item)) {
      report(item as Node, 'expected a workflow (a map with `name` and `provider`)');
      return;
    }
    const hosted = findHostedForms(item);
    if (hosted.length > 0) {
      for (const finding of hosted) report(finding.node, withName(item, finding.message));
      return;
    }
    const raw = workflowValue(doc, item);
    const result = WorkflowSchema.safeParse(raw);
    if (!result.success) {
      for (const issue of result.error.issues) {
        const { node, message } = locateIssue(item, issue);
        report(node, withName(item, message));
      }
      return;
    }
    out.push({ workflow: result.data, file, line: at(item).line });
  });
  return out;
}

/** The plain value of one workflow, with versions kept as written (3.10 stays "3.10", not 3.1). */
function workflowValue(doc: Document, item: YAMLMap): unknown {
  const plain = item.toJS(doc) as Record<string, unknown>;
  for (const key of ['python', 'version']) {
    const node = item.get(key, true);
    if (isScalar(node) && typeof node.value === 'number' && typeof node.source === 'string') plain[key] = node.source;
  }
  return plain;
}

function withName(item: YAMLMap, message: string): string {
  const name = item.get('name');
  return typeof name === 'string' ? `workflow \`${name}\`: ${message}` : message;
}

/** Maps a schema issue back to the YAML node it is about, and words it for a person. */
function locateIssue(item: YAMLMap, issue: z.core.$ZodIssue): { node: Node | null; message: string } {
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  let node: Node | null = item;
  for (const seg of path) {
    const next: Node | undefined = isMap(node) || isSeq(node) ? (node.get(seg, true) as Node | undefined) : undefined;
    if (!next) break;
    node = next;
  }
  const where = path.length > 0 ? `\`${path.join('.')}\`: ` : '';
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0] ?? '';
    const keyNode = isMap(node) ? (node.items.find((p) => isScalar(p.key) && p.key.value === key)?.key as Node | undefined) : undefined;
    return { node: keyNode ?? node, message: `${where}unknown key \`${key}\`: remove it or check its spelling` };
  }
  if (issue.code === 'invalid_type' && issue.input === undefined) {
    return { node, message: `missing \`${path.join('.')}\`: add it` };
  }
  return { node, message: `${where}${issue.message}` };
}
