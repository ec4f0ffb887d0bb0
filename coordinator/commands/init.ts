import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { ConflictError, errnoCode } from '../../common/errors.js';
import { exec } from '../../common/exec.js';
import { workflowFiles } from '../../common/spec/load.js';
import type { Output } from '../output.js';

/** `dstack init` needs no backend: only where it is and where to print. */
export interface InitContext {
  cwd: string;
  out: Output;
}

/** The starter file: it runs as it is (`dstack run hello`), and its comments show the other forms. */
export const STARTER_WORKFLOWS = `# dstack workflows: run one with \`dstack run NAME [ARGS...]\`, list them with \`dstack run\`.
# Each job runs on an agent, in a copy of this repo as it is on your disk (committed or not).
workflows:
  - name: hello
    help: Prints a greeting and the arguments given after the workflow name
    provider: bash
    commands:
      - echo "Hello from run $RUN_NAME"
      - echo "args=[\${{ run.args }}]"

  # A Python script with its requirements, and a folder saved as an artifact:
  # - name: train
  #   help: Trains the model and saves it
  #   provider: python
  #   python: 3.11
  #   file: train.py
  #   requirements: requirements.txt
  #   artifacts:
  #     - path: model
  #   resources:
  #     gpu: 1
  #     memory: 16GB

  # A workflow that starts from the artifacts of the last successful \`train\`:
  # - name: evaluate
  #   provider: bash
  #   deps:
  #     - workflow: train
  #   commands:
  #     - ls model
`;

/** Writes a starter `.dstack/workflows.yaml` at the repo root (or here, outside a repo); never overwrites one. */
export async function initCommand(ctx: InitContext): Promise<number> {
  const top = await exec('git', ['rev-parse', '--show-toplevel'], { cwd: ctx.cwd }).catch(() => undefined);
  const inRepo = top !== undefined && top.code === 0;
  const root = inRepo ? top.stdout.toString().trim() : ctx.cwd;
  const shown = (path: string): string => relative(ctx.cwd, path) || path;
  const existing = await workflowFiles(root);
  if (existing[0] !== undefined) {
    throw new ConflictError(`${shown(existing[0])} already exists: dstack init leaves it as it is (list its workflows with \`dstack run\`)`);
  }
  const file = join(root, '.dstack', 'workflows.yaml');
  await mkdir(join(root, '.dstack'), { recursive: true });
  try {
    await writeFile(file, STARTER_WORKFLOWS, { flag: 'wx' });
  } catch (e) {
    if (errnoCode(e) === 'EEXIST') throw new ConflictError(`${shown(file)} already exists: dstack init leaves it as it is`);
    throw e;
  }
  ctx.out.line(`Wrote ${shown(file)}. Try it: dstack run hello`);
  if (!inRepo) ctx.out.note(`note: dstack runs from a git repository: run \`git init\` in ${ctx.cwd} first`);
  return 0;
}
