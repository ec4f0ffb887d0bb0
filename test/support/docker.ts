import { execFile, spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import { ROOT } from './cli.js';
import { findTool, type SkippableContext } from './tools.js';

/** scripts/ci-docker.sh: starts and stops a private dockerd and registry (what .ci/run uses too). */
export const CI_DOCKER = join(ROOT, 'scripts', 'ci-docker.sh');

/** A Docker daemon and a registry on 127.0.0.1 that a test may use, with a test image pushed to it. */
export interface DockerEnv {
  /** The DOCKER_HOST value, `unix:///…/docker.sock`. */
  host: string;
  /** The registry, `127.0.0.1:PORT` (plain HTTP; loopback needs no TLS). */
  registry: string;
  /** A busybox-static image pushed to the registry, `127.0.0.1:PORT/busybox:latest` (sh, no bash). */
  image: string;
  /** A debootstrap minbase bookworm image in the registry (bash, apt), when test:slow's root was cached. */
  debianImage: string | undefined;
  /** The variables to add to a spawned CLI or agent so that its `docker` talks to this daemon. */
  env(): Record<string, string>;
  /** Runs the docker CLI against this daemon; resolves with its stdout, rejects with its stderr on a non-zero exit. */
  docker(args: string[]): Promise<string>;
  /**
   * Pushes a new image, busybox plus a file /variant holding `variant`, as `REGISTRY/<tag>` (`tag` is
   * `name:tag`): pushing another variant under the same tag moves the tag. Resolves with its digest, `sha256:…`.
   */
  push(tag: string, variant: string): Promise<string>;
  /** The full reference of `name:tag` in the registry. */
  ref(tag: string): string;
  /** The names of the containers, running or not, that carry `label` (`key` or `key=value`). */
  containers(label: string): Promise<string[]>;
  /** The registry digest of a pulled or pushed image, `sha256:…`, from `docker image inspect` RepoDigests. */
  digest(ref: string): Promise<string>;
}

/** The variables `ci-docker.sh start` prints and that .ci/run exports. */
interface StartedVars {
  DSTACK_TEST_DOCKER_HOST: string;
  DSTACK_TEST_REGISTRY: string;
  DSTACK_TEST_DOCKER_IMAGE: string;
  DSTACK_TEST_DOCKER_DEBIAN_IMAGE?: string | undefined;
}

/** What requireDocker reads; tests of this module pass their own. */
export interface DockerOptions {
  env: Record<string, string | undefined>;
  /** Whether this process may start dockerd (root). */
  isRoot?: boolean;
  /** Starts a private daemon: by default ci-docker.sh, once per process, stopped at exit. */
  start?: () => Promise<StartedVars>;
  log?: (line: string) => void;
}

/** The context requireDocker uses: mocha's `this`, whose timeout it raises while a daemon starts. */
export interface DockerContext extends SkippableContext {
  timeout?(ms: number): unknown;
}

/** Why no Docker daemon can be had here: `reason` is the line a skipped test prints. */
export class DockerUnavailable extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

/**
 * The Docker daemon and registry to use: the ones .ci/run started (DSTACK_TEST_DOCKER_HOST and
 * friends), or else a private pair started once per process with scripts/ci-docker.sh (needs root and
 * docker.io, docker-registry, busybox-static) and stopped when the process exits. Rejects with
 * DockerUnavailable when neither can be had; with any other error when the variables are half set.
 */
export async function openDocker(o: Omit<DockerOptions, 'log'> = { env: process.env }): Promise<DockerEnv> {
  const given = o.env.DSTACK_TEST_DOCKER_HOST;
  if (given !== undefined && given !== '') {
    const registry = o.env.DSTACK_TEST_REGISTRY;
    const image = o.env.DSTACK_TEST_DOCKER_IMAGE;
    if (!registry || !image) throw new Error('DSTACK_TEST_DOCKER_HOST is set without DSTACK_TEST_REGISTRY and DSTACK_TEST_DOCKER_IMAGE: set all three from `scripts/ci-docker.sh start DIR`');
    return dockerEnv({ DSTACK_TEST_DOCKER_HOST: given, DSTACK_TEST_REGISTRY: registry, DSTACK_TEST_DOCKER_IMAGE: image, DSTACK_TEST_DOCKER_DEBIAN_IMAGE: o.env.DSTACK_TEST_DOCKER_DEBIAN_IMAGE });
  }
  const missing = (['dockerd', 'docker-registry', 'busybox', 'docker'] as const).find((t) => !findOnPath(t, o.env));
  if (missing !== undefined) throw new DockerUnavailable(`needs dockerd (apt-get install docker.io docker-registry busybox-static): no ${missing} on PATH`);
  if (!(o.isRoot ?? process.getuid?.() === 0)) throw new DockerUnavailable('needs dockerd, which only root can start here (or set DSTACK_TEST_DOCKER_HOST from `scripts/ci-docker.sh start DIR`)');
  try {
    return dockerEnv(await (o.start ?? startPrivateOnce)());
  } catch (e) {
    const why = (e instanceof Error ? e.message : String(e)).trim().split('\n');
    throw new DockerUnavailable(`needs dockerd, which could not start: ${why.slice(-6).join(' | ')}`);
  }
}

/**
 * openDocker for a test: when no daemon can be had, the test is skipped with a reason naming dockerd
 * (its title and one line on stderr say why), except under CI (`CI` set), where it fails.
 */
export async function requireDocker(ctx: DockerContext, o: DockerOptions = { env: process.env }): Promise<DockerEnv> {
  // Starting a daemon and pushing the image takes several seconds.
  if (!o.env.DSTACK_TEST_DOCKER_HOST) ctx.timeout?.(180_000);
  try {
    return await openDocker(o);
  } catch (e) {
    if (!(e instanceof DockerUnavailable)) throw e;
    if (o.env.CI) throw new Error(`${e.reason}: CI must provide it (see .ci/run)`);
    const line = `skipped: ${e.reason}`;
    (o.log ?? ((l: string) => void process.stderr.write(`${l}\n`)))(line);
    if (ctx.test && ctx.test.type === 'test') ctx.test.title += ` (${line})`;
    return ctx.skip();
  }
}

function findOnPath(name: 'dockerd' | 'docker-registry' | 'busybox' | 'docker', env: Record<string, string | undefined>): boolean {
  // tools.ts knows dockerd; the others are looked up the same way, on PATH.
  if (name === 'dockerd') return findTool('dockerd', { env }) !== undefined;
  return (env.PATH ?? '').split(delimiter).some((dir) => {
    if (!isAbsolute(dir)) return false;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

let started: Promise<StartedVars> | undefined;

/** One private daemon per process: started on first use, stopped (synchronously) when the process exits. */
function startPrivateOnce(): Promise<StartedVars> {
  started ??= startPrivate();
  return started;
}

async function startPrivate(): Promise<StartedVars> {
  // Short, under /tmp: the daemon's unix sockets live inside it.
  const dir = mkdtempSync('/tmp/dsd-');
  process.once('exit', () => {
    // Its stderr is ours: a stop that could not clean up says so.
    spawnSync('bash', [CI_DOCKER, 'stop', dir], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 120_000 });
  });
  const out = await new Promise<string>((resolve, reject) => {
    // The owner pid makes the script stop everything itself if this process dies without its exit handler.
    const child = spawn('bash', [CI_DOCKER, 'start', dir], { env: { ...process.env, DSTACK_CI_DOCKER_OWNER: String(process.pid) }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`ci-docker.sh start exited ${String(code)}: ${stderr.trim()}`))));
  });
  const vars = parseEnvLines(out);
  const host = vars.DSTACK_TEST_DOCKER_HOST;
  const registry = vars.DSTACK_TEST_REGISTRY;
  const image = vars.DSTACK_TEST_DOCKER_IMAGE;
  if (!host || !registry || !image) throw new Error(`ci-docker.sh start printed no DSTACK_TEST_DOCKER_HOST, DSTACK_TEST_REGISTRY or DSTACK_TEST_DOCKER_IMAGE:\n${out}`);
  return { DSTACK_TEST_DOCKER_HOST: host, DSTACK_TEST_REGISTRY: registry, DSTACK_TEST_DOCKER_IMAGE: image, DSTACK_TEST_DOCKER_DEBIAN_IMAGE: vars.DSTACK_TEST_DOCKER_DEBIAN_IMAGE };
}

/** `KEY=VALUE` lines, as ci-docker.sh prints them and writes DIR/env. */
export function parseEnvLines(text: string): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m?.[1] !== undefined) vars[m[1]] = m[2] ?? '';
  }
  return vars;
}

function dockerEnv(v: StartedVars): DockerEnv {
  const host = v.DSTACK_TEST_DOCKER_HOST;
  const registry = v.DSTACK_TEST_REGISTRY;
  const docker = (args: string[]): Promise<string> =>
    new Promise((resolve, reject) => {
      execFile('docker', args, { env: { ...process.env, DOCKER_HOST: host }, maxBuffer: 64 << 20, timeout: 120_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`docker ${args.join(' ')}: ${stderr.trim() || err.message}`));
        else resolve(stdout);
      });
    });
  const ref = (tag: string): string => `${registry}/${tag}`;
  const digest = async (image: string): Promise<string> => {
    const digests = JSON.parse(await docker(['image', 'inspect', '-f', '{{json .RepoDigests}}', image])) as unknown;
    const repo = image.replace(/@.*$/, '').replace(/:[^:/]*$/, '');
    const found = Array.isArray(digests) ? digests.find((d): d is string => typeof d === 'string' && d.startsWith(`${repo}@`)) : undefined;
    if (found === undefined) throw new Error(`${image} has no digest from ${repo}: ${JSON.stringify(digests)}`);
    return found.slice(repo.length + 1);
  };
  return {
    host,
    registry,
    image: v.DSTACK_TEST_DOCKER_IMAGE,
    debianImage: v.DSTACK_TEST_DOCKER_DEBIAN_IMAGE,
    env: () => ({ DOCKER_HOST: host }),
    docker,
    ref,
    digest,
    async push(tag, variant) {
      const target = ref(tag);
      const dir = mkdtempSync('/tmp/dsd-variant-');
      const name = `dstack-test-variant-${process.pid}-${Date.now()}`;
      try {
        writeFileSync(join(dir, 'variant'), variant);
        await docker(['create', '--name', name, v.DSTACK_TEST_DOCKER_IMAGE, 'sh']);
        await docker(['cp', join(dir, 'variant'), `${name}:/variant`]);
        await docker(['commit', name, target]);
        await docker(['push', '-q', target]);
        return await digest(target);
      } finally {
        await docker(['rm', '-f', name]).catch(() => undefined);
        rmSync(dir, { recursive: true, force: true });
      }
    },
    async containers(label) {
      const out = await docker(['ps', '-a', '--filter', `label=${label}`, '--format', '{{.Names}}']);
      return out.split('\n').filter((l) => l !== '');
    },
  };
}
