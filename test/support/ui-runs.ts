import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dstack, waitFor } from './cli.js';

/**
 * The workflows the dashboard's tests and the screenshots script run on a local backend. `gate`
 * prints two lines, waits until the file named by its argument exists, then prints two more: a
 * test decides when it moves on. `hostile` prints markup and terminal escapes a page must show as text.
 */
export const UI_WORKFLOWS = `workflows:
  - name: quick
    provider: bash
    commands:
      - cat train.py
  - name: fails
    provider: bash
    commands:
      - echo "loading data"
      - echo "error - no such file data/train.csv" >&2
      - exit 3
  - name: gate
    provider: bash
    commands:
      - echo "tick 1"
      - echo "tick 2"
      - while [ ! -e "\${{ run.args }}" ]; do sleep 0.2; done
      - echo "tick 3"
      - echo finished
  - name: produce
    provider: bash
    commands:
      - mkdir -p out/sub
      - head -c 300000 /dev/urandom > out/sub/blob.bin
      - echo "weights" > out/notes.txt
      - sha256sum out/sub/blob.bin
    artifacts:
      - path: out
  - name: hostile
    provider: bash
    commands:
      - printf '<script>window.__pwned=1</script>\\n'
      - printf '\\033[31mred\\033[0m plain\\n'
      - printf '\\033]0;x\\007title-done\\n'
  - name: train
    provider: bash
    commands:
      - for e in 1 2 3; do printf '\\033[32mepoch %s\\033[0m loss 0.%s\\n' $e $((9 - e)); done
      - cat train.py
      - mkdir -p model && head -c 50000 /dev/urandom > model/weights.bin
    artifacts:
      - path: model
`;

/** train.py as committed: the tests' uncommitted change turns `lr = 0.1` into `lr = 0.2`. */
export const TRAIN_PY = 'import sys\nlr = 0.1\nepochs = 3\nprint("lr", lr)\n';

/** The repo's files: the workflows and train.py. */
export const UI_REPO_FILES = { '.dstack/workflows.yaml': UI_WORKFLOWS, 'train.py': TRAIN_PY };

/** Where the run name is in `dstack run`'s output. */
export const runNameIn = (text: string): string => /Run ([a-z]+-[a-z]+-\d+)/.exec(text)?.[1] ?? '';

/** `dstack run -d WORKFLOW ARGS…` in `repo`; returns the run's name, or throws with the CLI's output. */
export async function submit(repo: string, home: string, workflow: string, ...args: string[]): Promise<string> {
  const r = await dstack(['run', '-d', workflow, ...args], { cwd: repo, home });
  const name = runNameIn(r.stdout + r.stderr);
  if (r.code !== 0 || name === '') throw new Error(`dstack run -d ${workflow} exited ${r.code}: ${r.stdout}${r.stderr}`);
  return name;
}

/** Submits `workflow` while train.py holds an uncommitted change (`lr = 0.2`), then puts the committed file back. */
export async function submitWithDiff(repo: string, home: string, workflow: string): Promise<string> {
  writeFileSync(join(repo, 'train.py'), TRAIN_PY.replace('lr = 0.1', 'lr = 0.2'));
  try {
    return await submit(repo, home, workflow);
  } finally {
    execFileSync('git', ['checkout', '--', 'train.py'], { cwd: repo, stdio: 'ignore' });
  }
}

/** The run's status as `dstack ps RUN --json` shows it. */
export async function statusOf(repo: string, home: string, run: string): Promise<string> {
  const r = await dstack(['ps', run, '--json'], { cwd: repo, home });
  const rows = JSON.parse(r.stdout) as Array<{ status?: unknown }>;
  return String(rows[0]?.status ?? `(ps exited ${r.code}: ${r.stderr.trim()})`);
}

/** Waits until `dstack ps` shows one of `statuses` for `run`, and returns it. */
export async function waitForStatus(repo: string, home: string, run: string, statuses: string[], timeoutMs = 60_000): Promise<string> {
  let last = '';
  try {
    return await waitFor(async () => {
      last = await statusOf(repo, home, run);
      return statuses.includes(last) ? last : undefined;
    }, timeoutMs, `${run} to be ${statuses.join(' or ')}`);
  } catch (e) {
    throw new Error(`${(e as Error).message} (last: ${last})`);
  }
}
