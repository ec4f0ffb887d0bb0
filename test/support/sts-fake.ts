import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Who a key stands for, as GetCallerIdentity tells it. */
export interface FakeIdentity {
  /** The ARN, or a function that gives one per call (an SDK that names each assumed-role session anew). */
  arn: string | (() => string);
  userId: string;
  account: string;
}

const XMLNS = 'https://sts.amazonaws.com/doc/2011-06-15/';

/**
 * A small STS on the wire: GetCallerIdentity in the Query protocol (a form-encoded POST with
 * `Action=GetCallerIdentity&Version=2011-06-15`, an XML answer), with the identity chosen by the
 * access key id in the request's SigV4 Authorization header, so that two "users" with different
 * AWS_ACCESS_KEY_ID get different ARNs. An unknown key gets STS's 403 InvalidClientTokenId; any
 * other action, InvalidAction. `calls` counts the answered calls by access key id.
 */
export class StsFake {
  readonly calls = new Map<string, number>();
  private server: Server | undefined;

  constructor(private readonly identities: Record<string, FakeIdentity>) {}

  /** Starts on a free loopback port; returns the endpoint URL. */
  async start(): Promise<string> {
    const server = createServer((req, res) => void this.handle(req, res));
    this.server = server;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    const keyId = /Credential=([^/,\s]+)\//.exec(req.headers.authorization ?? '')?.[1];
    if (req.method !== 'POST' || form.get('Action') !== 'GetCallerIdentity' || form.get('Version') !== '2011-06-15') {
      return this.error(res, 400, 'InvalidAction', `Could not find operation ${form.get('Action') ?? '(none)'} for version ${form.get('Version') ?? '(none)'}`);
    }
    const who = keyId === undefined ? undefined : this.identities[keyId];
    if (!keyId || !who) return this.error(res, 403, 'InvalidClientTokenId', 'The security token included in the request is invalid.');
    this.calls.set(keyId, (this.calls.get(keyId) ?? 0) + 1);
    res.writeHead(200, { 'content-type': 'text/xml' });
    res.end(
      `<GetCallerIdentityResponse xmlns="${XMLNS}"><GetCallerIdentityResult>` +
        `<Arn>${typeof who.arn === 'string' ? who.arn : who.arn()}</Arn><UserId>${who.userId}</UserId><Account>${who.account}</Account>` +
        `</GetCallerIdentityResult><ResponseMetadata><RequestId>${randomUUID()}</RequestId></ResponseMetadata></GetCallerIdentityResponse>`,
    );
  }

  private error(res: ServerResponse, status: number, code: string, message: string): void {
    res.writeHead(status, { 'content-type': 'text/xml' });
    res.end(
      `<ErrorResponse xmlns="${XMLNS}"><Error><Type>Sender</Type><Code>${code}</Code><Message>${message}</Message></Error>` +
        `<RequestId>${randomUUID()}</RequestId></ErrorResponse>`,
    );
  }
}
