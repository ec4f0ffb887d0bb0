import { TransportError } from '../common/errors.js';

/** What the agent needs from the EC2 instance metadata service (IMDSv2). */
export interface InstanceMetadata {
  /** The body at `path` under the base URL, or null when IMDS answers 404 (no such item, e.g. no spot notice). */
  get(path: string): Promise<string | null>;
}

const TOKEN_TTL_SEC = 21600;

/**
 * An IMDSv2 client: a session token from `PUT /latest/api/token`, sent with every GET and renewed
 * before it expires. The base URL comes from config, so tests (and the fleet simulator) serve their own.
 */
export class Imds implements InstanceMetadata {
  private token: { value: string; expiresAtMs: number } | null = null;

  constructor(
    private readonly baseUrl: string,
    private readonly timeoutMs = 2000,
  ) {}

  async get(path: string, retried = false): Promise<string | null> {
    const res = await this.request('GET', path, { 'X-aws-ec2-metadata-token': await this.sessionToken() });
    if (res.status === 401 && !retried) {
      // The token was revoked or IMDS restarted: fetch a new one once.
      this.token = null;
      return this.get(path, true);
    }
    if (res.status === 404) return null;
    if (!res.ok) throw new TransportError(`IMDS ${path}: HTTP ${res.status}`, { statusCode: res.status, retryable: res.status >= 500 });
    return res.text();
  }

  private async sessionToken(): Promise<string> {
    if (this.token && Date.now() < this.token.expiresAtMs) return this.token.value;
    const res = await this.request('PUT', 'latest/api/token', { 'X-aws-ec2-metadata-token-ttl-seconds': String(TOKEN_TTL_SEC) });
    if (!res.ok) throw new TransportError(`IMDS token: HTTP ${res.status}`, { statusCode: res.status, retryable: res.status >= 500 });
    this.token = { value: await res.text(), expiresAtMs: Date.now() + (TOKEN_TTL_SEC - 60) * 1000 };
    return this.token.value;
  }

  private async request(method: string, path: string, headers: Record<string, string>): Promise<Response> {
    const url = new URL(path.replace(/^\//, ''), this.baseUrl.endsWith('/') ? this.baseUrl : `${this.baseUrl}/`);
    try {
      return await fetch(url, { method, headers, signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (e) {
      throw new TransportError(`IMDS at ${this.baseUrl} did not answer ${method} ${path}: ${(e as Error).message}`, { cause: e, retryable: true });
    }
  }
}
