import { TransportError } from '../errors.js';

interface AwsLikeError {
  name?: string;
  message?: string;
  Code?: string;
  $retryable?: unknown;
  $metadata?: { httpStatusCode?: number };
}

const RETRYABLE_CODES = new Set([
  'ThrottlingException',
  'Throttling',
  'RequestThrottled',
  'SlowDown',
  'InternalError',
  'ServiceUnavailable',
  'RequestTimeout',
  'RequestTimeoutException',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ECONNREFUSED',
  'TimeoutError',
]);

/** The AWS error code of anything thrown by the SDK (or by the network under it). */
export function awsCode(e: unknown): string {
  if (e && typeof e === 'object') {
    const x = e as AwsLikeError & { code?: unknown };
    if (typeof x.Code === 'string') return x.Code;
    if (typeof x.code === 'string') return x.code;
    if (typeof x.name === 'string') return x.name;
  }
  return 'Unknown';
}

export function awsStatus(e: unknown): number | undefined {
  return e && typeof e === 'object' ? (e as AwsLikeError).$metadata?.httpStatusCode : undefined;
}

/** Wraps an SDK error in a TransportError that keeps its code, HTTP status and whether a retry may help. */
export function wrapAws(e: unknown, what: string): TransportError {
  if (e instanceof TransportError) return e;
  const code = awsCode(e);
  const status = awsStatus(e);
  const retryable =
    Boolean(e && typeof e === 'object' && (e as AwsLikeError).$retryable) || RETRYABLE_CODES.has(code) || (status !== undefined && status >= 500);
  const message = e instanceof Error ? e.message : String(e);
  return new TransportError(`${what}: ${code}${status ? ` (HTTP ${status})` : ''}: ${message}`, {
    cause: e,
    retryable,
    awsCode: code,
    ...(status === undefined ? {} : { statusCode: status }),
  });
}
