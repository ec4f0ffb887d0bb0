import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** The five Secrets Manager operations dstack calls. */
export type SecretsOp = 'CreateSecret' | 'PutSecretValue' | 'GetSecretValue' | 'ListSecrets' | 'DeleteSecret';

/** An error answer: HTTP status, the `__type` and the message, as Secrets Manager sends them. */
export interface FakeError {
  status: number;
  type: string;
  message: string;
}

interface Secret {
  arn: string;
  value: string;
  versionId: string;
  createdAt: number;
}

type Body = Record<string, unknown>;

class ApiError extends Error {
  constructor(
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

// The SDK's notice about Node 20 would be noise in every test that uses the client.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const NAME = /^[A-Za-z0-9/_+=.@-]{1,512}$/;

/**
 * A small Secrets Manager on 127.0.0.1 and a free port, on the wire: AWS's JSON 1.1 protocol
 * (POST /, `X-Amz-Target: secretsmanager.<Op>`, `application/x-amz-json-1.1`), the five operations
 * dstack uses, with the real error shapes (`__type` and `message`, HTTP 400). Signatures are not
 * checked. Every request is recorded, so a test can look at what went over the wire.
 */
export class SecretsManagerFake {
  private server: Server | undefined;
  private readonly secrets = new Map<string, Secret>();
  /** Names whose forced deletion is still "in progress" until the time given (ms since epoch). */
  private readonly deleting = new Map<string, number>();
  private readonly injected: Array<{ op: SecretsOp; error: (body: Body) => FakeError }> = [];
  /** Every request, in order: the operation and its JSON body. */
  readonly requests: Array<{ op: string; body: Body }> = [];

  constructor(
    private readonly o: {
      /** Secrets per ListSecrets page at most (AWS: MaxResults, up to 100). */
      pageSize?: number;
      /** How long a force-deleted name stays unusable for CreateSecret (AWS deletes in the background). */
      deletionLagMs?: number;
    } = {},
  ) {}

  async start(): Promise<string> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    const s = this.server;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  /** The next call of `op` answers with this error (a function of its request body) instead. */
  inject(op: SecretsOp, error: (body: Body) => FakeError): void {
    this.injected.push({ op, error });
  }

  /** The names it holds, sorted (for tests; values stay in here). */
  names(): string[] {
    return [...this.secrets.keys()].sort();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const send = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': randomBytes(8).toString('hex') });
      res.end(JSON.stringify(body));
    };
    try {
      const target = String(req.headers['x-amz-target'] ?? '');
      if (req.method !== 'POST' || !target.startsWith('secretsmanager.')) throw new ApiError('UnknownOperationException', `no operation ${target}`);
      if (!String(req.headers['content-type'] ?? '').startsWith('application/x-amz-json-1.1')) throw new ApiError('SerializationException', 'expected application/x-amz-json-1.1');
      const op = target.slice('secretsmanager.'.length);
      let body: Body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Body;
      } catch {
        throw new ApiError('SerializationException', 'Start of structure or map found where not expected');
      }
      this.requests.push({ op, body });
      const at = this.injected.findIndex((x) => x.op === op);
      if (at >= 0) {
        const [x] = this.injected.splice(at, 1);
        const e = x?.error(body);
        if (e) throw new ApiError(e.type, e.message, e.status);
      }
      send(200, this.call(op, body));
    } catch (e) {
      if (e instanceof ApiError) send(e.status, { __type: e.type, message: e.message });
      else send(500, { __type: 'InternalServiceError', message: String(e) });
    }
  }

  private call(op: string, b: Body): unknown {
    switch (op) {
      case 'CreateSecret': {
        const name = this.name(b.Name, 'Name');
        const value = this.value(b);
        if (this.secrets.has(name)) throw new ApiError('ResourceExistsException', `The operation failed because the secret ${name} already exists.`);
        if ((this.deleting.get(name) ?? 0) > Date.now()) {
          throw new ApiError('InvalidRequestException', "You can't create this secret because a secret with this name is already scheduled for deletion.");
        }
        const s: Secret = { arn: `arn:aws:secretsmanager:us-east-1:000000000000:secret:${name}-${randomBytes(3).toString('hex')}`, value, versionId: version(), createdAt: Date.now() / 1000 };
        this.secrets.set(name, s);
        return { ARN: s.arn, Name: name, VersionId: s.versionId };
      }
      case 'PutSecretValue': {
        const [name, s] = this.find(b.SecretId);
        s.value = this.value(b);
        s.versionId = version();
        return { ARN: s.arn, Name: name, VersionId: s.versionId, VersionStages: ['AWSCURRENT'] };
      }
      case 'GetSecretValue': {
        const [name, s] = this.find(b.SecretId);
        return { ARN: s.arn, Name: name, VersionId: s.versionId, SecretString: s.value, VersionStages: ['AWSCURRENT'], CreatedDate: s.createdAt };
      }
      case 'ListSecrets': {
        const max = typeof b.MaxResults === 'number' ? b.MaxResults : 100;
        if (max < 1 || max > 100) throw new ApiError('InvalidParameterException', 'MaxResults must be between 1 and 100');
        const filters = Array.isArray(b.Filters) ? (b.Filters as Array<{ Key?: string; Values?: string[] }>) : [];
        for (const f of filters) if (f.Key !== 'name') throw new ApiError('InvalidParameterException', `this fake filters by name only, not ${f.Key}`);
        const prefixes = filters.flatMap((f) => f.Values ?? []);
        const all = this.names().filter((n) => prefixes.length === 0 || prefixes.some((p) => n.startsWith(p)));
        const start = typeof b.NextToken === 'string' ? Number(Buffer.from(b.NextToken, 'base64').toString()) : 0;
        if (!Number.isInteger(start) || start < 0 || start > all.length) throw new ApiError('InvalidNextTokenException', 'The NextToken value is invalid.');
        const size = Math.min(max, this.o.pageSize ?? 100);
        const page = all.slice(start, start + size);
        const next = start + size < all.length ? Buffer.from(String(start + size)).toString('base64') : undefined;
        const SecretList = page.map((n) => ({ ARN: this.secrets.get(n)?.arn, Name: n, CreatedDate: this.secrets.get(n)?.createdAt }));
        return next ? { SecretList, NextToken: next } : { SecretList };
      }
      case 'DeleteSecret': {
        const name = this.name(b.SecretId, 'SecretId');
        if (b.ForceDeleteWithoutRecovery !== true) throw new ApiError('InvalidParameterException', 'this fake deletes only with ForceDeleteWithoutRecovery');
        const s = this.secrets.get(name);
        // A forced delete of a missing secret succeeds (AWS: so that retries are safe).
        this.secrets.delete(name);
        if (s && this.o.deletionLagMs) this.deleting.set(name, Date.now() + this.o.deletionLagMs);
        return { ARN: s?.arn ?? `arn:aws:secretsmanager:us-east-1:000000000000:secret:${name}`, Name: name, DeletionDate: Date.now() / 1000 };
      }
      default:
        throw new ApiError('UnknownOperationException', `this fake does not implement ${op}`);
    }
  }

  private name(x: unknown, field: string): string {
    if (typeof x !== 'string' || !NAME.test(x)) throw new ApiError('InvalidParameterException', `Invalid ${field}: ${typeof x === 'string' ? x : 'missing'}`);
    return x;
  }

  private value(b: Body): string {
    if (typeof b.SecretString !== 'string') throw new ApiError('InvalidRequestException', 'You must provide either SecretString or SecretBinary.');
    if (Buffer.byteLength(b.SecretString) > 65536) throw new ApiError('InvalidParameterException', 'SecretString is longer than 65536 bytes.');
    return b.SecretString;
  }

  private find(id: unknown): [string, Secret] {
    const name = this.name(id, 'SecretId');
    const s = this.secrets.get(name);
    if (!s) {
      if ((this.deleting.get(name) ?? 0) > Date.now()) throw new ApiError('InvalidRequestException', "You can't perform this operation on the secret because it was marked for deletion.");
      throw new ApiError('ResourceNotFoundException', "Secrets Manager can't find the specified secret.");
    }
    return [name, s];
  }
}

function version(): string {
  const h = randomBytes(16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
