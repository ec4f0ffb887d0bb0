// Peak memory of a real agent (dist/agent/main.js, started by the CLI as a user's run starts it)
// while it saves a large artifact and while it restores it through deps: VmHWM of /proc/PID/status,
// reset between the two through /proc/PID/clear_refs. 4 GiB on the local backend; 1 GiB on the AWS
// backend against fauxqs (agents: local), since fauxqs keeps every object in memory.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { agentPids, killAgents } from '../test/support/cli.js';
import { SecretsManagerFake } from '../test/support/secrets-manager-fake.js';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist', 'coordinator', 'main.js');
const GiB = 1024 ** 3;

/**
 * A workflow that writes `gib` GiB to out/big, every 8 MiB chunk distinct (so that nothing dedups):
 * one random block, each chunk of it stamped with its number; one that restores it as a dep; and one
 * that only starts the agent.
 */
function repoFiles(gib: number): Record<string, string> {
  return {
    'gen.py': `import os\nb = bytearray(os.urandom(8 << 20))\nwith open('out/big', 'wb') as f:\n    for i in range(${gib * 128}):\n        b[:8] = i.to_bytes(8, 'little')\n        f.write(b)\n`,
    '.dstack/workflows.yaml': `workflows:
  - name: warm
    provider: bash
    commands: [echo warm]
  - name: big
    provider: bash
    commands:
      - mkdir -p out
      - python3 gen.py
    artifacts: [out]
  - name: use
    provider: bash
    deps:
      - workflow: big
    commands:
      - stat -c %s out/big
`,
  };
}

/** kB of /proc/PID/status's VmHWM (the peak resident set) as MB. */
function peakMb(pid: number): number {
  const kb = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  return kb / 1024;
}

/** Runs `big` then `use` on one agent; the agent's peak RSS during each. */
async function measure(dir: string, gib: number, configure: (home: string, repo: string, env: NodeJS.ProcessEnv) => Promise<void>): Promise<{ save: number; restore: number; saveMs: number; restoreMs: number }> {
  const home = join(dir, 'home');
  const repo = join(dir, 'repo');
  mkdirSync(home, { recursive: true });
  mkdirSync(join(repo, '.dstack'), { recursive: true });
  for (const [name, text] of Object.entries(repoFiles(gib))) writeFileSync(join(repo, name), text);
  const git = (...args: string[]): void => void execFileSync('git', args, { cwd: repo, stdio: 'ignore' });
  git('init', '-q');
  git('add', '-A');
  git('-c', 'user.name=b', '-c', 'user.email=b@b', 'commit', '-qm', 'bench');
  const env: NodeJS.ProcessEnv = { ...process.env, DSTACK_HOME: home, AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
  const dstack = async (...args: string[]): Promise<{ ms: number; stdout: string }> => {
    const t0 = performance.now();
    // Asynchronous: fauxqs and the Secrets Manager fake may answer from this process.
    const child = spawn(process.execPath, [CLI, ...args], { cwd: repo, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((r) => child.on('close', r));
    if (code !== 0) throw new Error(`bench: dstack ${args.join(' ')} exited ${String(code)}: ${stderr}`);
      return { ms: performance.now() - t0, stdout };
  };
  try {
    await configure(home, repo, env);
    // A first run starts the agent; its peak is then reset, so that only the save and the restore count.
    await dstack('run', 'warm');
    const pid = agentPids(home)[0];
    if (pid === undefined) throw new Error('bench: no agent is running');
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    const saveRun = await dstack('run', 'big');
    if (agentPids(home)[0] !== pid) throw new Error('bench: the save ran on another agent');
    const save = peakMb(pid);
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    const use = await dstack('run', 'use');
    if (Number(use.stdout.trim()) !== gib * GiB) throw new Error(`bench: the dep restored ${use.stdout.trim()} bytes, not ${gib * GiB}`);
    if (agentPids(home)[0] !== pid) throw new Error('bench: the restore ran on another agent');
    return { save, restore: peakMb(pid), saveMs: saveRun.ms, restoreMs: use.ms };
  } finally {
    await killAgents(home);
  }
}

async function startFauxqs(): Promise<{ address: string; stop: () => void }> {
  const code = `import('fauxqs').then(async ({ startFauxqs }) => { const s = await startFauxqs({ port: 0, logger: false, host: '127.0.0.1' }); process.stdout.write(s.address + '\\n'); })`;
  const child = spawn(process.execPath, ['-e', code], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const address = await new Promise<string>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()));
    child.once('exit', (c) => reject(new Error(`fauxqs exited (${String(c)})`)));
  });
  return { address, stop: () => void child.kill('SIGKILL') };
}

const row = (what: string, mb: number, ms: number): string => `| agent peak RSS (VmHWM), ${what} | ${mb.toFixed(0)} MB | target | 250 MB | ${(mb / 250).toFixed(2)}x of the target (run took ${(ms / 1000).toFixed(1)} s) |`;

/** Rows of peak RSS; a backend that cannot be measured here is named and skipped. */
export async function benchRss(dir: string): Promise<string[]> {
  const rows: string[] = [];
  if (!existsSync('/proc/self/clear_refs')) return ['| agent peak RSS | skipped: no /proc/PID/clear_refs (Linux only) | | | |'];
  mkdirSync(dir, { recursive: true });
  const fs = statfsSync(dir);
  // The file in the job's folder, its blobs in the local store, and the restored copy, with room to spare.
  const freeGiB = (fs.bavail * fs.bsize) / GiB;
  if (freeGiB < 14) rows.push(`| agent peak RSS, local backend | skipped: ${freeGiB.toFixed(0)} GiB free, 14 needed | | | |`);
  else {
    const local = await measure(join(dir, 'local'), 4, async (home) =>
      writeFileSync(join(home, 'config.yaml'), 'backend: local\nlocal:\n  agentIdleTimeoutSec: 600\n  maxParallelJobs: 1\n'),
    );
    rows.push(row('saving 4 GiB, local backend', local.save, local.saveMs), row('restoring 4 GiB through deps, local backend', local.restore, local.restoreMs));
  }
  const fauxqs = await startFauxqs();
  const sm = new SecretsManagerFake();
  const smUrl = await sm.start();
  try {
    const aws = await measure(join(dir, 'aws'), 1, async (home, repo, env) => {
      const suffix = Math.random().toString(16).slice(2, 10);
      const args = ['config', '--backend', 'aws', '--region', 'us-east-1', '--bucket', `rss-${suffix}`, '--queue-prefix', `rss-${suffix}`, '--sqs-endpoint', fauxqs.address, '--s3-endpoint', fauxqs.address, '--sts-endpoint', fauxqs.address, '--secretsmanager-endpoint', smUrl, '--max-parallel-jobs', '1', '--agents', 'local'];
      // Asynchronous: the Secrets Manager fake answers from this process.
      const child = spawn(process.execPath, [CLI, ...args], { cwd: repo, env, stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      if ((await new Promise<number | null>((r) => child.on('close', r))) !== 0) throw new Error(`bench: dstack config: ${err}`);
      const file = join(home, 'config.yaml');
      writeFileSync(file, readFileSync(file, 'utf8').replace('local:\n', 'local:\n  agentIdleTimeoutSec: 600\n  sandbox: off\n'));
    });
    rows.push(row('saving 1 GiB, AWS backend on fauxqs', aws.save, aws.saveMs), row('restoring 1 GiB through deps, AWS backend on fauxqs', aws.restore, aws.restoreMs));
  } finally {
    fauxqs.stop();
    await sm.stop();
  }
  return rows;
}
