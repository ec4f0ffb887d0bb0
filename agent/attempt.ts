import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import pRetry from 'p-retry';
import { DstackError, JobFailedError, TransportError, toError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Store } from '../common/ports.js';
import type { SecretStore } from '../common/secrets.js';
import { StopRequestSchema } from '../common/records/runs.js';
import { readJson, runKeys, type FinalRecord, type StopRequest } from '../common/runs.js';
import type { JobSpec } from '../common/spec/job-spec.js';
import { ArtifactSaver, absoluteArtifactPaths, restoreCheckpoint, restoreDeps } from './artifacts.js';
import { startJob, type JobExit, type JobProcess } from './job-process.js';
import { LogShipper } from './log-shipper.js';
import { prepareRun, type PreparedRun } from './providers.js';
import { ServiceWatch, formatSeconds } from './service.js';
import type { ServiceInfo } from '../common/records/runs.js';
import { useRequirementsEnv } from './python-env.js';
import { rebuildCode } from './workspace.js';
import { fetchSecrets } from './secrets.js';
import { sandboxed, type Sandbox } from './sandbox.js';
import { checkNoForeignLinks, chownTree, endJobUserProcesses, type JobUser } from './job-user.js';
import type { GpuGrant, GpuPool } from './gpus.js';
import { REGISTRY_PASSWORD, REGISTRY_USERNAME, pullImage, removeContainer, startContainer, type DockerClient, type ImageRecord } from './runtime/docker.js';
import { basename } from 'node:path';

export interface AttemptOptions {
  store: Store;
  spec: JobSpec;
  attempt: number;
  /** A fresh directory for this attempt; removed when it ends. */
  jobDir: string;
  jobEnv: NodeJS.ProcessEnv;
  /** The repo's secrets and the run's pinned env values, set as env vars and masked in the output. */
  secrets?: SecretStore;
  /** The cache of venvs for `requirements`, shared by the agents of this machine. */
  venvRoot: string;
  /** The Conda envs made for `python: X.Y`, shared by the agents of this machine (see python-find.ts). */
  condaRoot?: string;
  stopGraceMs: number;
  /** How often a running job checks for a stop request. */
  tickMs: number;
  /** How often `mount: true` artifacts are saved while the job runs. */
  artifactSyncMs: number;
  /**
   * Aborted when this attempt must end at once (its holder lost the job): the job is killed,
   * nothing more is saved, and the attempt reports `abandoned`.
   */
  signal: AbortSignal;
  /** A file with an epoch-ms time after which the job's process group is killed even if this process is frozen. */
  deadlineFile?: string;
  /** Run the job under bwrap (see sandbox.ts). */
  sandbox?: Sandbox;
  /** Run the job (and pip for its `requirements`) as this user, owner of the job's folder (see job-user.ts). */
  jobUser?: JobUser;
  /** `local.codeServer`, for `provider: code`. */
  codeServer?: string;
  /** Gets what the running job serves (its ports, a dev environment's server) each time that changes; undefined when it ends. */
  onService?: (info: ServiceInfo | undefined) => void;
  /** How long the run's earlier attempts ran their job: `max_duration` counts it. */
  ranBeforeMs?: number;
  /** The docker CLI, for `provider: docker`; undefined when this machine has none. */
  docker?: DockerClient;
  /** Who runs the attempt: labels of its container. */
  agentId?: string;
  host?: string;
  /** Gets the image a docker job runs, by its digest, once it is pulled: recorded in the attempt. */
  onImage?: (image: ImageRecord) => void;
  /** The GPUs of this machine: a job that asks for GPUs waits for its own here before it starts. */
  gpuPool?: GpuPool;
  /** Called once the job's process has started: where it runs, with what, and the ports it may serve (for `dstack ssh`). */
  onJobStarted?: (job: StartedJob) => void;
  log: Logger;
}

export interface StartedJob {
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** The job's ports and a dev environment's server port: all a forward may reach. */
  ports: number[];
  user?: JobUser;
}

/**
 * How an attempt ended: `ended` with the job's own outcome (to settle), `abandoned` (the signal
 * fired: settle nothing), or `handed-back` (forced off, or the infrastructure failed before the job
 * could run: another attempt should take it).
 */
export type AttemptResult = { outcome: 'ended'; final: FinalRecord } | { outcome: 'abandoned' } | { outcome: 'handed-back'; reason: string };

/**
 * One attempt of a job, in order: workspace, environment, the job's process, its output, its
 * artifacts. It knows nothing of queues or leases, only its AbortSignal.
 */
export class Attempt {
  private proc: JobProcess | undefined;
  private forced = false;
  private stopRequest: StopRequest | null = null;
  /** Why the agent itself stopped the job (max_duration, idle_duration). */
  private autoStop: string | undefined;
  /** Ends the setup (a pip install can take minutes) on a stop request or a forced stop, before the job starts. */
  private readonly setup = new AbortController();

  constructor(private readonly o: AttemptOptions) {}

  /** Stops the job now (SIGTERM, then SIGKILL after the grace), or keeps it from starting; the attempt is handed back. */
  force(): void {
    this.forced = true;
    this.setup.abort(new HandedBack('the agent was stopped before the job started'));
    this.proc?.stop(this.o.stopGraceMs);
  }

  async run(): Promise<AttemptResult> {
    const { store, spec, attempt, jobDir, signal, log } = this.o;
    const { repoId, runName } = spec;
    const shipper = new LogShipper(store, (seq) => runKeys.logChunk(repoId, runName, attempt, seq));
    // Named after the repo, as a clone would be: what a dev environment's explorer and file tree show.
    const codeDir = join(jobDir, 'repo', repoDirName(repoId));
    // A container sees its absolute artifact paths (and its deps') in a folder of the job's, never the host's.
    const absRoot = spec.provider === 'docker' ? join(jobDir, 'root') : undefined;
    const saver = new ArtifactSaver(store, spec, codeDir, absRoot);
    const onAbort = (): void => this.proc?.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    let stopTimer: NodeJS.Timeout | undefined;
    let syncTimer: NodeJS.Timeout | undefined;
    let ended = false;
    let stopReadFailing = false;
    let maxTimer: NodeJS.Timeout | undefined;
    let jobExited = false;
    let service: ServiceWatch | undefined;
    let gpus: GpuGrant | undefined;
    let container: string | undefined;
    // Re-armed with setTimeout so that reads never overlap. An error here is not a lost lease: it is
    // tried again at the next tick (the lease, not this read, decides whether the job is still ours).
    const pollStop = async (): Promise<void> => {
      try {
        this.stopRequest ??= await readJson(store, runKeys.stop(repoId, runName), StopRequestSchema);
        stopReadFailing = false;
        this.applyStop();
      } catch (e) {
        if (!stopReadFailing) log.log('warn', 'could not read the stop request: trying again', { error: toError(e).message });
        stopReadFailing = true;
      }
      if (!ended) stopTimer = setTimeout(() => void pollStop(), this.o.tickMs);
    };
    stopTimer = setTimeout(() => void pollStop(), this.o.tickMs);

    let result: AttemptResult;
    let started = false;
    const user = this.o.jobUser;
    try {
      // Nothing an earlier job left running (as the same user) may see this job's secrets or folder.
      if (user) await endJobUserProcesses(user);
      await rebuildCode(store, spec.code, codeDir);
      // Fetched before anything the job's repo controls prints, so every line after this is masked.
      const { [REGISTRY_USERNAME]: registryUser, [REGISTRY_PASSWORD]: registryPassword, ...secretEnv } = this.o.secrets ? await fetchSecrets(this.o.secrets, spec) : {};
      shipper.mask([...Object.values(secretEnv), ...(registryPassword !== undefined ? [registryPassword] : [])]);
      const docker = spec.provider === 'docker' ? this.o.docker : undefined;
      if (spec.provider === 'docker' && !docker) throw new JobFailedError('`provider: docker` needs Docker, and this agent\'s machine has no `docker` on PATH: install Docker (apt-get install docker.io) or run the job on a machine that has it');
      const python = { ...(this.o.condaRoot !== undefined ? { condaRoot: this.o.condaRoot } : {}), say: (d: Buffer | string) => shipper.write('err', d), signal: AbortSignal.any([signal, this.setup.signal]) };
      const prepared = await prepareRun(spec, jobDir, codeDir, this.o.jobEnv, secretEnv, { ...(this.o.codeServer !== undefined ? { codeServer: this.o.codeServer } : {}), python });
      const madeForJob = user && absRoot === undefined ? await absoluteArtifactDirs(spec) : [];
      if (absRoot !== undefined) for (const path of absoluteArtifactPaths(spec)) await mkdir(join(absRoot, path), { recursive: true });
      // What a restore writes at an absolute path (in a folder an earlier job made, say) becomes the job user's.
      await restoreDeps(store, spec, codeDir, (line) => shipper.write('err', line), user, absRoot);
      // A later attempt resumes: what the earlier ones saved (checkpoints included) is put back first.
      if (attempt > 1) await restoreCheckpoint(store, spec, codeDir, (line) => shipper.write('err', line), user, absRoot);
      // What the agent made for the job (its folder, code, deps) becomes the job user's.
      if (user) for (const dir of [jobDir, ...madeForJob]) await chownTree(dir, user);
      // After the deps, as when `pip install -r` was the job's first line: the file may name a wheel a dep made.
      const setupSignal = AbortSignal.any([signal, this.setup.signal]);
      await useRequirementsEnv(spec, prepared, { venvRoot: this.o.venvRoot, jobDir, say: (d) => shipper.write('err', d), signal: setupSignal, ...(user ? { user } : {}) });
      if (signal.aborted) throw signal.reason;
      if (this.forced) throw new HandedBack('the agent was stopped before the job started');
      let image: string | undefined;
      if (docker) {
        const pulled = await pullImage({
          client: docker,
          image: spec.image ?? '',
          jobDir,
          ...(registryUser !== undefined && registryPassword !== undefined ? { login: { username: registryUser, password: registryPassword } } : {}),
          say: (line) => shipper.write('err', `dstack: ${line}\n`),
          output: (d) => shipper.write('err', d),
          signal: setupSignal,
        });
        image = pulled.pinned;
        this.o.onImage?.(pulled);
      }
      // Last before the start: a job waiting for its GPUs holds nothing else of the machine's meanwhile.
      const wantGpus = spec.resources.gpu;
      if (wantGpus !== undefined && wantGpus.count > 0) {
        if (!this.o.gpuPool) throw new JobFailedError(`workflow \`${spec.workflow}\` asks for ${wantGpus.count} GPU${wantGpus.count === 1 ? '' : 's'}, and this agent has none: run it with \`--gpu 0\` or on a machine with GPUs`);
        gpus = await this.o.gpuPool.acquire(wantGpus, `${spec.runName}/${attempt}`, setupSignal, (line) => shipper.write('err', `dstack: ${line}\n`), this.o.deadlineFile !== undefined ? { deadlineFile: this.o.deadlineFile } : {});
      }
      assignGpus(prepared, gpus?.indices ?? []);
      if (signal.aborted) throw signal.reason;
      if (this.forced) throw new HandedBack('the agent was stopped before the job started');
      if (ServiceWatch.needed(prepared)) {
        // The proxy's port is taken before the job starts: a failure here fails the attempt with nothing left running.
        service = new ServiceWatch({
          prepared,
          publish: (info) => this.o.onService?.(info),
          ...(spec.idleDurationS !== undefined ? { idleDurationS: spec.idleDurationS } : {}),
          onIdle: (reason) => this.stopItself(reason, shipper),
        });
        await service.listen();
      }
      let proc: JobProcess;
      if (docker && image !== undefined) {
        container = `dstack-${basename(jobDir)}`;
        const uid = process.getuid?.() ?? 0;
        proc = await startContainer(
          docker,
          {
            spec,
            attempt,
            agentId: this.o.agentId ?? 'agent',
            host: this.o.host ?? 'localhost',
            name: container,
            image,
            prepared,
            codeDir,
            absolutePaths: absoluteArtifactPaths(spec).map((path) => ({ host: join(absRoot ?? jobDir, path), container: path })),
            ...(uid !== 0 ? { ids: { uid, gid: process.getgid?.() ?? uid } } : {}),
          },
          this.o.deadlineFile,
        );
      } else {
        const command = this.o.sandbox ? await sandboxed(this.o.sandbox, prepared.script, jobDir, spec, user) : undefined;
        proc = startJob(prepared.script, {
          cwd: prepared.cwd,
          env: prepared.env,
          ...(this.o.deadlineFile ? { deadlineFile: this.o.deadlineFile } : {}),
          ...(command ? { command } : {}),
          ...(user ? { user } : {}),
        });
      }
      this.proc = proc;
      started = true;
      // Aborted or forced while the container was being created: it is stopped now, not left to run.
      if (signal.aborted) proc.abort();
      else if (this.forced) proc.stop(this.o.stopGraceMs);
      void proc.exited.then(
        () => (jobExited = true),
        () => (jobExited = true),
      );
      proc.stdout.on('data', (d: Buffer) => shipper.write('out', d));
      proc.stderr.on('data', (d: Buffer) => shipper.write('err', d));
      this.applyStop();
      if (spec.maxDurationS !== undefined) {
        const limit = spec.maxDurationS;
        // What earlier attempts ran counts too: the limit is the run's, not each attempt's.
        const deadline = Date.now() + limit * 1000 - (this.o.ranBeforeMs ?? 0);
        const arm = (): void => {
          // setTimeout holds at most ~24.8 days: a longer limit is re-armed on the way.
          maxTimer = setTimeout(() => (Date.now() >= deadline ? this.stopItself(`stopped after running longer than ${formatSeconds(limit)} (max_duration)`, shipper) : arm()), Math.min(Math.max(0, deadline - Date.now()), 2 ** 31 - 1));
        };
        arm();
      }
      if (service) await service.start();
      this.o.onJobStarted?.({ cwd: prepared.cwd, env: prepared.env, ports: service?.allPorts ?? [], ...(user ? { user } : {}) });
      if (saver.hasMounted) {
        // `mount: true`: save while the job runs, so that a stopped or killed job keeps its progress.
        const sync = (): void => {
          syncTimer = setTimeout(() => {
            saver.save(false).then(sync, (e: unknown) => {
              log.log('warn', 'incremental artifact save failed', { error: toError(e).message });
              sync();
            });
          }, this.o.artifactSyncMs);
        };
        sync();
      }
      const exit = await proc.exited;
      shipper.endOutput();
      const stop = this.stopRequest;
      const final =
        stop ? finalRecord('stopped', exit.code, stopReason(stop), attempt)
        : this.autoStop !== undefined ? finalRecord('stopped', exit.code, this.autoStop, attempt)
        : exitFinal(exit, attempt);
      // Forced off (a second SIGTERM, a spot notice) before it finished: what it saves is the
      // checkpoint the next attempt resumes from.
      // A job the agent itself was stopping (max_duration, idle_duration) ends as stopped, not handed back to run again.
      result = this.forced && !stop && this.autoStop === undefined && final.status !== 'done' ? { outcome: 'handed-back', reason: 'forced stop' } : { outcome: 'ended', final };
    } catch (e) {
      const err = toError(e);
      // Failed after the job started (the dev environment's watch): the job ends too, before its folder goes.
      const proc = this.proc;
      if (proc && !jobExited) {
        proc.abort();
        await proc.exited.catch(() => undefined);
      }
      if (signal.aborted) result = { outcome: 'abandoned' };
      else if (err instanceof HandedBack) result = { outcome: 'handed-back', reason: err.message };
      else if (err instanceof StoppedInSetup) result = { outcome: 'ended', final: finalRecord('stopped', null, err.message, attempt) };
      else if (isInfrastructure(err)) {
        // Not the job's failure: another attempt, maybe on another machine, gets it.
        const reason = `attempt ${attempt} could not set up the job (${err.message}): handing it back for another attempt`;
        shipper.write('err', `dstack: ${reason}\n`);
        result = { outcome: 'handed-back', reason };
      } else {
        const final = finalRecord('failed', null, err instanceof JobFailedError ? err.message : `agent error: ${err.message}`, attempt);
        shipper.write('err', `dstack: ${final.reason ?? ''}\n`);
        result = { outcome: 'ended', final };
      }
    } finally {
      ended = true;
      clearTimeout(stopTimer);
      clearTimeout(syncTimer);
      clearTimeout(maxTimer);
      await service?.stop().catch((e: unknown) => log.log('warn', 'could not stop the dev environment proxy', { error: toError(e).message }));
      signal.removeEventListener('abort', onAbort);
    }
    let containerLeft = false;
    if (container !== undefined && this.o.docker) {
      // No container outlives its attempt, however it ended.
      const docker = this.o.docker;
      await pRetry(() => removeContainer(docker, container ?? ''), { retries: 3, minTimeout: 200 }).catch((e: unknown) => {
        containerLeft = true;
        log.log('error', 'could not remove the job\'s container: its GPUs stay claimed until this agent ends', { container, error: toError(e).message });
      });
    }
    if (gpus && !containerLeft) {
      // Only once the job's process has ended (above, whatever the outcome): no two jobs ever share a GPU.
      if (this.proc && !jobExited) await this.proc.exited.catch(() => undefined);
      await gpus.release().catch((e: unknown) => log.log('error', 'could not release the job\'s GPUs', { error: toError(e).message }));
    }
    if (user) {
      // The job's leftovers (setsid, double fork) end before its artifacts are read and before another job starts.
      await endJobUserProcesses(user).catch((e: unknown) => log.log('error', 'could not end the job user\'s processes', { error: toError(e).message }));
    }
    if (signal.aborted) result = { outcome: 'abandoned' };
    // Whatever the job produced is kept, however it ended, unless another agent now owns the job.
    if (started && result.outcome !== 'abandoned') result = await this.saveArtifacts(saver, shipper, result);
    try {
      await shipper.close();
    } catch (e) {
      log.log('warn', 'some log chunks could not be stored', { error: toError(e).message });
    }
    await rm(jobDir, { recursive: true, force: true }).catch(() => undefined);
    return result;
  }

  /**
   * The final save. A transport error (an S3 outage) is retried while the lease holds: saves are
   * content-addressed, so a retry uploads only what is missing, and the job is never run again for
   * it. Any other failure fails a job that succeeded, and its reason reaches the log and the final status.
   */
  private async saveArtifacts(saver: ArtifactSaver, shipper: LogShipper, result: AttemptResult): Promise<AttemptResult> {
    // The output is stored before the save: a save that fills the disk must not take the logs with it.
    await shipper.flush();
    try {
      await pRetry(() => saver.save(true, (line) => shipper.write('err', line)), {
        retries: SAVE_RETRIES,
        minTimeout: 1000,
        factor: 2,
        signal: this.o.signal,
        shouldRetry: (e) => isInfrastructure(e),
        onFailedAttempt: (e) => {
          if (e.retriesLeft > 0 && isInfrastructure(e)) shipper.write('err', `dstack: saving the artifacts failed (${e.message}): retrying\n`);
        },
      });
      return result;
    } catch (e) {
      const reason = toError(e).message;
      this.o.log.log('error', 'artifact save failed', { error: reason });
      shipper.write('err', `dstack: ${reason}\n`);
      if (result.outcome === 'ended' && result.final.status === 'done') {
        return { outcome: 'ended', final: finalRecord('failed', result.final.exitCode, reason, this.o.attempt) };
      }
      return result;
    }
  }

  /** The agent stops the job itself (max_duration, idle_duration): SIGTERM, then SIGKILL after the grace, and the reason in the log and the final status. */
  private stopItself(reason: string, shipper: LogShipper): void {
    if (this.autoStop !== undefined || this.stopRequest || !this.proc) return;
    this.autoStop = reason;
    shipper.write('err', `dstack: ${reason}\n`);
    this.proc.stop(this.o.stopGraceMs);
  }

  private applyStop(): void {
    const stop = this.stopRequest;
    if (stop && !this.proc) this.setup.abort(new StoppedInSetup(stopReason(stop)));
    if (!this.proc || !stop) return;
    if (stop.abort) this.proc.abort();
    else this.proc.stop(this.o.stopGraceMs);
  }
}

/**
 * The absolute artifact paths of the job and of its deps, made now (as root) for the job user to
 * write; the folders that were there stay as they are, and a link the job user may have left on
 * the way is refused (checkNoForeignLinks). Returns the topmost folders made, to hand
 * over (chownTree) once the restore has filled them.
 */
async function absoluteArtifactDirs(spec: JobSpec): Promise<string[]> {
  const made: string[] = [];
  for (const path of absoluteArtifactPaths(spec)) {
    await checkNoForeignLinks(path);
    const top = await mkdir(path, { recursive: true }).catch(() => undefined);
    if (top !== undefined && !made.some((m) => top.startsWith(`${m}/`))) made.push(top);
  }
  return made;
}

/**
 * The job sees only the GPUs it was given: CUDA_VISIBLE_DEVICES (and NVIDIA_VISIBLE_DEVICES, which the
 * NVIDIA container runtime reads) name them, and are empty for a job that asked for none.
 */
export function assignGpus(prepared: PreparedRun, indices: number[]): void {
  prepared.gpus = indices;
  const ids = indices.join(',');
  prepared.env.CUDA_VISIBLE_DEVICES = ids;
  // nvidia-smi's indices follow the PCI bus; CUDA's own order is fastest first unless told otherwise.
  prepared.env.CUDA_DEVICE_ORDER = 'PCI_BUS_ID';
  prepared.env.NVIDIA_VISIBLE_DEVICES = indices.length > 0 ? ids : 'void';
}

/** The repo's folder name from its id: `github.com/acme/mnist` → `mnist`, `local/mnist-0123456789` → `mnist`. */
export function repoDirName(repoId: string): string {
  const last = repoId.split('/').pop() ?? '';
  const name = repoId.startsWith('local/') ? last.replace(/-[0-9a-f]{10}$/, '') : last;
  return /^[A-Za-z0-9_][A-Za-z0-9._-]*$/.test(name) ? name : 'code';
}

/** Retries of the final save after a transport error: 1 + 2 + 4 + 8 s, within any lease. */
const SAVE_RETRIES = 4;

/** The attempt ends before its job started, to be run by another. */
class HandedBack extends Error {}

/** The user stopped the run while its setup (the venv for `requirements`) was under way. */
class StoppedInSetup extends Error {}

/**
 * An error of the machinery (the Store, the queue, the network), not of the job: a TransportError
 * or a retryable error anywhere in the cause chain.
 */
export function isInfrastructure(e: unknown): boolean {
  for (let x: unknown = e, depth = 0; x instanceof Error && depth < 8; x = x.cause, depth++) {
    if (x instanceof TransportError) return true;
    if (x instanceof DstackError && x.retryable) return true;
  }
  return false;
}

export function finalRecord(status: FinalRecord['status'], exitCode: number | null, reason: string | null, attempt: number | null): FinalRecord {
  return { status, exitCode, reason, finishedAt: new Date().toISOString(), attempt };
}

function stopReason(stop: StopRequest): string {
  return stop.abort ? 'aborted by the user (SIGKILL)' : 'stopped by the user';
}

function exitFinal(exit: JobExit, attempt: number): FinalRecord {
  if (exit.code === 0) return finalRecord('done', 0, null, attempt);
  if (exit.code !== null) {
    return finalRecord('failed', exit.code, `a command exited with code ${exit.code}`, attempt);
  }
  const hint = exit.signal === 'SIGKILL' ? ' (out of memory?)' : '';
  return finalRecord('failed', null, `the job was killed by ${exit.signal ?? 'a signal'}${hint}`, attempt);
}
