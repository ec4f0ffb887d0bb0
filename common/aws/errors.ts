import { ConfigError, TransportError } from '../errors.js';

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

/** Whether an AWS error code says that the same call may succeed if tried again. */
export const retryableCode = (code: string): boolean => RETRYABLE_CODES.has(code);

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

/** Codes of credentials AWS refused: unknown key, bad signature, expired token. */
const REJECTED = /InvalidClientTokenId|SignatureDoesNotMatch|InvalidAccessKeyId|UnrecognizedClientException|InvalidSignatureException|ExpiredToken/;

/**
 * The one line for credentials the SDK found nowhere (environment, ~/.aws, SSO, process, instance or
 * container role) or AWS refused, saying how to fix it; undefined for any other error. `what` ends
 * "while trying to …"; `keepCause: false` leaves the SDK error out (Secrets Manager's may carry a value).
 */
export function credentialsError(e: unknown, o: { what: string; profile?: string | undefined; keepCause?: boolean }): ConfigError | undefined {
  const code = awsCode(e);
  const cause = o.keepCause === false ? {} : { cause: e };
  if (code === 'CredentialsProviderError') {
    const forProfile = o.profile ? ` for profile \`${o.profile}\`` : '';
    return new ConfigError(
      `no AWS credentials found${forProfile} while trying to ${o.what}: run \`aws configure\`, or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (\`dstack config --profile NAME\` picks a profile)`,
      cause,
    );
  }
  if (REJECTED.test(code)) {
    const ofProfile = o.profile ? ` of profile \`${o.profile}\`` : '';
    return new ConfigError(`AWS rejected the credentials${ofProfile} (${code}) while trying to ${o.what}: check \`aws configure\` or run \`dstack config\``, cause);
  }
  return undefined;
}
