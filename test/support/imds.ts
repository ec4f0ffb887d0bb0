import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What an EC2 instance's metadata service tells about it. */
export interface InstanceFacts {
  instanceId: string;
  /** The instance's user-data (for dstack: config.yaml). */
  userData: string;
  /** The instance profile's role and its temporary credentials, as the AWS SDK fetches them. */
  role: { name: string; accessKeyId: string; secretAccessKey: string; sessionToken: string };
}

export interface Imds {
  /** http://127.0.0.1:PORT, the value for DSTACK_IMDS_URL and AWS_EC2_METADATA_SERVICE_ENDPOINT. */
  url: string;
  /** `METHOD path status` of every request, in order. */
  requests: string[];
  stop(): Promise<void>;
}

/**
 * A loopback stand-in for the EC2 instance metadata service with IMDSv2 required (http_tokens =
 * required, as dstack's fleet launches instances): a token from `PUT /latest/api/token` (with
 * X-aws-ec2-metadata-token-ttl-seconds) must come with every GET, or the answer is 401.
 */
export async function startImds(facts: InstanceFacts): Promise<Imds> {
  const tokens = new Set<string>();
  const requests: string[] = [];
  const answer = (req: IncomingMessage, res: ServerResponse, status: number, body: string, type = 'text/plain'): void => {
    requests.push(`${req.method ?? '?'} ${req.url ?? '?'} ${status}`);
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  const routes: Record<string, () => [string, string?]> = {
    '/latest/user-data': () => [facts.userData, 'application/octet-stream'],
    '/latest/meta-data/instance-id': () => [facts.instanceId],
    '/latest/meta-data/iam/security-credentials/': () => [facts.role.name],
    [`/latest/meta-data/iam/security-credentials/${facts.role.name}`]: () => [
      JSON.stringify({
        Code: 'Success',
        LastUpdated: new Date().toISOString(),
        Type: 'AWS-HMAC',
        AccessKeyId: facts.role.accessKeyId,
        SecretAccessKey: facts.role.secretAccessKey,
        Token: facts.role.sessionToken,
        Expiration: new Date(Date.now() + 6 * 3600_000).toISOString(),
      }),
      'application/json',
    ],
  };
  const server = createServer((req, res) => {
    req.resume();
    const path = (req.url ?? '').split('?')[0] ?? '';
    if (path === '/latest/api/token') {
      const ttl = Number(req.headers['x-aws-ec2-metadata-token-ttl-seconds']);
      if (req.method !== 'PUT') return answer(req, res, 405, '');
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > 21600) return answer(req, res, 400, '');
      const token = randomBytes(24).toString('base64url');
      tokens.add(token);
      return answer(req, res, 200, token);
    }
    if (req.method !== 'GET') return answer(req, res, 405, '');
    const token = req.headers['x-aws-ec2-metadata-token'];
    if (typeof token !== 'string' || !tokens.has(token)) return answer(req, res, 401, '');
    const route = routes[path];
    if (!route) return answer(req, res, 404, '');
    const [body, type] = route();
    return answer(req, res, 200, body, type);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** An instance id of EC2's shape: `i-` and 17 hex digits. */
export function instanceId(): string {
  return `i-${randomBytes(9).toString('hex').slice(0, 17)}`;
}
