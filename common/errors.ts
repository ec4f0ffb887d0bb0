/** Machine-readable error codes. Branch on these (or on the class), never on message text. */
export type ErrorCode =
  | 'CONFIG'
  | 'SPEC'
  | 'NOT_FOUND'
  | 'CONFLICT'
  | 'GIT'
  | 'TRANSPORT'
  | 'JOB_FAILED'
  | 'LEASE_LOST'
  | 'USAGE'
  | 'RESOURCES'
  | 'CORRUPT'
  | 'INTERNAL';

/** The one base error: a code, whether retrying may help, and the underlying cause. */
export class DstackError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; retryable?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retryable = options.retryable ?? false;
  }
}

/** Bad or missing configuration; the message says which file or setting to fix. */
export class ConfigError extends DstackError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('CONFIG', message, options);
  }
}

/** One problem found while validating a workflow file, located at file:line:col. */
export interface SpecProblem {
  file: string;
  line: number;
  col: number;
  message: string;
}

/** Workflow files failed validation; carries every problem, not just the first. */
export class SpecError extends DstackError {
  readonly problems: SpecProblem[];

  constructor(problems: SpecProblem[]) {
    super('SPEC', problems.map(formatProblem).join('\n'));
    this.problems = problems;
  }
}

/** Renders a problem as the single line a user sees: `file:line:col: message`. */
export function formatProblem(p: SpecProblem): string {
  return `${p.file}:${p.line}:${p.col}: ${p.message}`;
}

/** A named thing (run, workflow, object) does not exist. */
export class NotFoundError extends DstackError {
  constructor(message: string) {
    super('NOT_FOUND', message);
  }
}

/** A create-if-absent write found the key already present. */
export class ConflictError extends DstackError {
  constructor(message: string) {
    super('CONFLICT', message);
  }
}

/** The command line was wrong; the message says how to call it. */
export class UsageError extends DstackError {
  constructor(message: string) {
    super('USAGE', message);
  }
}

/** A git command failed or the directory is not a repository. */
export class GitError extends DstackError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('GIT', message, options);
  }
}

/** A queue, store or compute backend failed; retryable when the backend says so. */
export class TransportError extends DstackError {
  readonly statusCode: number | undefined;
  readonly awsCode: string | undefined;

  constructor(message: string, options: { cause?: unknown; retryable?: boolean; statusCode?: number; awsCode?: string } = {}) {
    super('TRANSPORT', message, options);
    this.statusCode = options.statusCode;
    this.awsCode = options.awsCode;
  }
}

/** A job ended unsuccessfully; `reason` is what a person can act on. */
export class JobFailedError extends DstackError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('JOB_FAILED', message, options);
  }
}

/** The agent could not extend its lease; the job must be abandoned, not acked. */
export class LeaseLostError extends DstackError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('LEASE_LOST', message, options);
  }
}

/** Coerces anything thrown into an Error we can read. */
export function toError(e: unknown): Error {
  if (e instanceof Error) return e;
  return new DstackError('INTERNAL', typeof e === 'string' ? e : JSON.stringify(e));
}

/** Reads a Node system error code such as ENOENT, if there is one. */
export function errnoCode(e: unknown): string | undefined {
  if (e instanceof Error && 'code' in e && typeof e.code === 'string') return e.code;
  return undefined;
}

/** No machine type satisfies a workflow's `resources`; the message says what was asked and what comes closest. */
export class ResourceError extends DstackError {
  constructor(message: string) {
    super('RESOURCES', message);
  }
}
