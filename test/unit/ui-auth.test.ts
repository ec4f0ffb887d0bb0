import { expect } from 'chai';
import type { IncomingMessage } from 'node:http';
import { checkRequest, cookieValue, loginCookie, newToken } from '../../coordinator/ui/auth.js';

const TOKEN = newToken();
const PORT = 41234;

/** A request as the gate sees it: method, URL and headers only. */
function gate(path: string, headers: Record<string, string>, method = 'GET'): ReturnType<typeof checkRequest> {
  const req = { method, headers: { host: `127.0.0.1:${PORT}`, ...headers } } as unknown as IncomingMessage;
  return checkRequest(req, new URL(path, 'http://127.0.0.1'), { token: TOKEN, port: PORT });
}

describe('ui auth gate', () => {
  it('makes 32-byte base64url tokens, a new one each time', () => {
    expect(TOKEN).to.match(/^[A-Za-z0-9_-]{43}$/);
    expect(newToken()).not.to.equal(TOKEN);
  });

  it('answers 401 to a page, an API call or an event stream without the token, or with a wrong one', () => {
    for (const path of ['/', '/app.js', '/api/runs', '/api/events', '/api/runs/a-b-1/artifacts/0/download?path=x']) expect(gate(path, {})).to.include({ kind: 'deny', status: 401 });
    expect(gate('/?token=wrong', {})).to.include({ kind: 'deny', status: 401 });
    expect(gate('/api/runs', { cookie: 'dstack_ui=wrong' })).to.include({ kind: 'deny', status: 401 });
    expect(gate('/api/runs', { cookie: `dstack_ui=${TOKEN}x` })).to.include({ kind: 'deny', status: 401 });
  });

  it('turns the token in the printed URL into a login, and then lets the cookie in', () => {
    expect(gate(`/?token=${TOKEN}`, {})).to.deep.equal({ kind: 'login' });
    const cookie = loginCookie(TOKEN);
    expect(cookie).to.equal(`dstack_ui=${TOKEN}; HttpOnly; SameSite=Strict; Path=/`);
    expect(gate('/api/runs', { cookie: `other=1; ${cookie.split(';')[0] ?? ''}` })).to.deep.equal({ kind: 'pass' });
    // A script or curl may pass the token as a query on any path.
    expect(gate(`/api/runs?token=${TOKEN}`, {})).to.deep.equal({ kind: 'pass' });
  });

  it('refuses a foreign Host (DNS rebinding) with 403, even with the right cookie', () => {
    const cookie = `dstack_ui=${TOKEN}`;
    expect(gate('/api/runs', { cookie, host: 'localhost:' + PORT })).to.deep.equal({ kind: 'pass' });
    for (const host of ['evil.example', `evil.example:${PORT}`, '127.0.0.1:1', '']) expect(gate('/api/runs', { cookie, host })).to.include({ kind: 'deny', status: 403 });
  });

  it('refuses a POST from another origin with 403, and takes one with no Origin or its own', () => {
    const cookie = `dstack_ui=${TOKEN}`;
    expect(gate('/api/runs/a-b-1/stop', { cookie, origin: 'http://evil.example' }, 'POST')).to.include({ kind: 'deny', status: 403 });
    expect(gate('/api/runs/a-b-1/stop', { cookie, origin: `http://127.0.0.1:${PORT}` }, 'POST')).to.deep.equal({ kind: 'pass' });
    expect(gate('/api/runs/a-b-1/stop', { cookie }, 'POST')).to.deep.equal({ kind: 'pass' });
  });

  it('reads one cookie out of a Cookie header', () => {
    expect(cookieValue('a=1; dstack_ui=t ; b=2', 'dstack_ui')).to.equal('t');
    expect(cookieValue('xdstack_ui=t', 'dstack_ui')).to.equal(undefined);
    expect(cookieValue(undefined, 'dstack_ui')).to.equal(undefined);
  });
});
