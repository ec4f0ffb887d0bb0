import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A small IMDSv2 server on 127.0.0.1 for one simulated instance: session tokens (required),
 * instance id, instance type, user-data, and the spot interruption notice and rebalance
 * recommendation, which a test can inject.
 */
export class ImdsServer {
  private server: Server | null = null;
  private readonly tokens = new Set<string>();
  private spotAction: { action: 'terminate' | 'stop' | 'hibernate'; time: string } | null = null;
  private rebalanceAt: string | null = null;
  private role: InstanceRole | null = null;
  /** Requests served, by path, for assertions. */
  readonly hits = new Map<string, number>();

  constructor(
    readonly instanceId: string,
    private readonly userData: string | null,
    readonly instanceType = 'g5.xlarge',
    readonly lifecycle: 'spot' | 'on-demand' = 'spot',
    /** The instance's address (`local-ipv4` and `public-ipv4`): the fleet simulator gives each instance its own 127.0.0.N. */
    readonly address?: string,
  ) {}

  /** Listens on 127.0.0.1 and a free port, or where the caller says (169.254.169.254:80 in a network namespace). */
  async start(host = '127.0.0.1', port = 0): Promise<string> {
    this.server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      this.hits.set(path, (this.hits.get(path) ?? 0) + 1);
      if (req.method === 'PUT' && path === '/latest/api/token') {
        const ttl = Number(req.headers['x-aws-ec2-metadata-token-ttl-seconds']);
        if (!(ttl >= 1 && ttl <= 21600)) return end(res, 400, 'bad ttl');
        const token = randomBytes(16).toString('hex');
        this.tokens.add(token);
        return end(res, 200, token);
      }
      if (req.method !== 'GET') return end(res, 405, '');
      if (!this.tokens.has(String(req.headers['x-aws-ec2-metadata-token'] ?? ''))) return end(res, 401, 'unauthorized');
      const body = this.item(path);
      return body === null ? end(res, 404, 'Not Found') : end(res, 200, body);
    });
    await new Promise<void>((resolve) => this.server!.listen(port, host, resolve));
    return `http://${host}:${(this.server.address() as AddressInfo).port}`;
  }

  /** Serves an interruption notice two minutes ahead, as EC2 does. */
  injectSpotNotice(action: 'terminate' | 'stop' | 'hibernate' = 'terminate'): void {
    this.spotAction = { action, time: new Date(Date.now() + 120_000).toISOString().replace(/\.\d+Z$/, 'Z') };
  }

  /** Serves an instance profile's role and temporary credentials, where the AWS SDK looks for them. */
  setInstanceRole(role: InstanceRole): void {
    this.role = role;
  }

  injectRebalance(): void {
    this.rebalanceAt = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private item(path: string): string | null {
    const credentials = '/latest/meta-data/iam/security-credentials/';
    if (this.role && path === credentials) return this.role.name;
    if (this.role && path === `${credentials}${this.role.name}`) {
      const { accessKeyId: AccessKeyId, secretAccessKey: SecretAccessKey, sessionToken: Token } = this.role;
      const Expiration = new Date(Date.now() + 6 * 3600_000).toISOString();
      return JSON.stringify({ Code: 'Success', LastUpdated: new Date().toISOString(), Type: 'AWS-HMAC', AccessKeyId, SecretAccessKey, Token, Expiration });
    }
    switch (path) {
      case '/latest/meta-data/instance-id':
        return this.instanceId;
      case '/latest/meta-data/instance-type':
        return this.instanceType;
      case '/latest/meta-data/instance-life-cycle':
        return this.lifecycle;
      case '/latest/user-data':
        return this.userData;
      case '/latest/meta-data/local-ipv4':
      case '/latest/meta-data/public-ipv4':
        return this.address ?? null;
      case '/latest/meta-data/spot/instance-action':
        return this.spotAction ? JSON.stringify(this.spotAction) : null;
      case '/latest/meta-data/events/recommendations/rebalance':
        return this.rebalanceAt ? JSON.stringify({ noticeTime: this.rebalanceAt }) : null;
      default:
        return null;
    }
  }
}

/** An instance profile's role name and the temporary credentials IMDS hands out for it. */
export interface InstanceRole {
  name: string;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
}

function end(res: import('node:http').ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain' });
  res.end(body);
}
