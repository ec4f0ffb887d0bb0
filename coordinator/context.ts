import type { DstackConfig } from '../common/config.js';
import type { GcOptions } from '../common/gc.js';
import type { Compute, Queue, Store } from '../common/ports.js';
import type { SecretStore } from '../common/secrets.js';
import type { Output } from './output.js';

/** What every command gets from the composition root; commands read no environment of their own. */
export interface Context {
  config: DstackConfig;
  /** The queue of a placement profile (`default` outside EC2); `create` only for `run`'s own job. */
  queueFor: (profileId: string, options?: { create?: boolean }) => Promise<Queue>;
  store: Store;
  /** Who runs this CLI: the caller's ARN on AWS (STS, asked once and only when a command needs it), `user@host` locally. */
  owner: () => Promise<string>;
  /** The secret store: files under DSTACK_HOME locally, Secrets Manager on AWS (undefined only in tests that need none). */
  secrets?: SecretStore;
  /** Reads a secret value: a hidden prompt on a terminal, else all of stdin less one final newline. */
  readSecret?: (prompt: string) => Promise<string>;
  compute: Compute;
  /** What `dstack gc` cleans on this machine besides the Store (work folders, temp dirs), from the open backend. */
  gcTargets: () => Promise<Pick<GcOptions, 'workRoot' | 'liveAgents' | 'tempDirs'>>;
  out: Output;
  cwd: string;
  /** This build's version, recorded with every run. */
  toolVersion: string;
  /** The submitting shell's environment, for bare `K` env items. */
  shellEnv: Record<string, string | undefined>;
  /**
   * Asks a yes/no question on a terminal; `yes` (-y) answers it. Without a terminal and without -y
   * it throws a UsageError, so scripts never delete or stop by accident.
   */
  confirm(question: string, yes: boolean): Promise<boolean>;
  /** Resolves when the user presses Ctrl-C. */
  interrupted: Promise<void>;
}
