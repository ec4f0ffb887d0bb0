// What the soak checks after each run: its markers (double runs), its artifacts (corrupt
// downloads) and, at the end of a loop, the agents' work folders (leaks).
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
export { alive } from '../test/support/process.js';

/**
 * The workflow every soak run uses. Each attempt appends `<ms> start|tick|end <pid>` lines to
 * `$SOAK_MARKERS/$RUN_NAME` (outside the repo, by an absolute path): start, a tick every 0.2 s for
 * `${{ run.args }}` seconds, then end. It saves 2 MB of random bytes with their sha256 as an artifact.
 */
export const SOAK_WORKFLOWS = `workflows:
  - name: soak
    provider: bash
    env: [SOAK_MARKERS]
    commands:
      - f="$SOAK_MARKERS/$RUN_NAME"; me="$$"
      - mark() { echo "$(date +%s%3N) $1 $me" >> "$f"; }
      - mark start
      - until=$(( $(date +%s%3N) + \${{ run.args }} * 1000 ))
      - while [ "$(date +%s%3N)" -lt "$until" ]; do mark tick; sleep 0.2; done
      - mkdir -p out
      - head -c 2000000 /dev/urandom > out/data.bin
      - sha256sum out/data.bin | cut -c1-64 > out/data.sha
      - mark end
    artifacts: [out]
`;

/** One attempt as its markers show it: the job shell's pid, its first and last mark, and whether it ended. */
export interface Span {
  pid: number;
  firstMs: number;
  lastMs: number;
  ended: boolean;
}

/** The attempts of one run, in the order they started. */
export function readSpans(markers: string, run: string): Span[] {
  const file = join(markers, run);
  if (!existsSync(file)) return [];
  const byPid = new Map<number, Span>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const [ms, what, pid] = line.split(' ');
    if (!ms || !what || !pid) continue;
    const t = Number(ms);
    const span = byPid.get(Number(pid)) ?? { pid: Number(pid), firstMs: t, lastMs: t, ended: false };
    span.firstMs = Math.min(span.firstMs, t);
    span.lastMs = Math.max(span.lastMs, t);
    if (what === 'end') span.ended = true;
    byPid.set(span.pid, span);
  }
  return [...byPid.values()].sort((a, b) => a.firstMs - b.firstMs);
}

/** Why a run counts as run twice: two attempts that ran at the same time. */
export function doubleRun(spans: Span[]): string | undefined {
  for (let i = 0; i < spans.length; i++) {
    for (let j = i + 1; j < spans.length; j++) {
      const a = spans[i]!;
      const b = spans[j]!;
      if (a.firstMs <= b.lastMs && b.firstMs <= a.lastMs) {
        return `attempts ${i + 1} and ${j + 1} ran side by side for ${Math.min(a.lastMs, b.lastMs) - Math.max(a.firstMs, b.firstMs)} ms`;
      }
    }
  }
  return undefined;
}

/** Whether a downloaded `out/` holds the bytes the job hashed: undefined when whole, else what is wrong. */
export function corruptDownload(dir: string): string | undefined {
  const data = join(dir, 'out', 'data.bin');
  const sha = join(dir, 'out', 'data.sha');
  if (!existsSync(data) || !existsSync(sha)) return `missing ${existsSync(data) ? 'out/data.sha' : 'out/data.bin'}`;
  const want = readFileSync(sha, 'utf8').trim();
  const got = createHash('sha256').update(readFileSync(data)).digest('hex');
  return got === want ? undefined : `sha256 ${got.slice(0, 12)}… is not the job's ${want.slice(0, 12)}…`;
}

/** Job folders left in the agents' work dirs (`<home>/local/work/<agent>/<run>-<attempt>-<hex>`). */
export function workFolders(home: string): string[] {
  const root = join(home, 'local', 'work');
  if (!existsSync(root)) return [];
  return readdirSync(root).flatMap((agent) => {
    try {
      return readdirSync(join(root, agent)).map((f) => `${agent}/${f}`);
    } catch {
      return [];
    }
  });
}

/** The local agents registered under a home: id, pid, state. */
export function agents(home: string): Array<{ id: string; pid: number; state: string }> {
  const dir = join(home, 'local', 'agents');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => n.endsWith('.json'))
    .flatMap((n) => {
      try {
        return [JSON.parse(readFileSync(join(dir, n), 'utf8')) as { id: string; pid: number; state: string }];
      } catch {
        return [];
      }
    });
}

/** Runs whose record is in a local store, listed or not (a submit killed before its index key). */
export function storedRuns(home: string): string[] {
  const repos = join(home, 'local', 'store', 'objects', 'repos');
  if (!existsSync(repos)) return [];
  return readdirSync(repos).flatMap((repo) => {
    const runs = join(repos, repo, 'runs');
    if (!existsSync(runs)) return [];
    return readdirSync(runs).filter((run) => existsSync(join(runs, run, 'run.json')));
  });
}
