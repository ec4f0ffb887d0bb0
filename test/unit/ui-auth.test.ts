import { expect } from 'chai';
import type { IncomingMessage } from 'node:http';
import { checkRequest, cookieValue, cookieValues, loginCookie, newPrefix, newToken } from '../../coordinator/ui/auth.js';

const TOKEN = newToken();
const PREFIX = newPrefix();
const PORT = 41234;

/** A request as the gate sees it: method, URL and headers only. */
function gate(path: string, headers: Record<string, string>, method = 'GET'): ReturnType<typeof checkRequest> {
  const req = { method, headers: { host: `127.0.0.1:${PORT}`, ...headers } } as unknown as IncomingMessage;
  return checkRequest(req, new URL(path, 'http://127.0.0.1'), { token: TOKEN, port: PORT, prefix: PREFIX });
}

const inside = (path: string): string => PREFIX + path.replace(/^\//, '');

describe('ui auth gate', () => {
  it('makes 32-byte base64url tokens and 16-byte path prefixes, new ones each time', () => {
    expect(TOKEN).to.match(/^[A-Za-z0-9_-]{43}$/);
    expect(newToken()).not.to.equal(TOKEN);
    expect(PREFIX).to.match(/^\/s\/[A-Za-z0-9_-]{22}\/$/);
    expect(newPrefix()).not.to.equal(PREFIX);
  });

  it('answers 401 to a page, an API call or an event stream without the token, or with a wrong one', () => {
    for (const path of ['/', '/app.js', '/api/runs', '/api/events', '/api/runs/a-b-1/artifacts/0/download?path=x']) {
      expect(gate(path, {})).to.include({ kind: 'deny', status: 401 });
      expect(gate(inside(path), {})).to.include({ kind: 'deny', status: 401 });
    }
    expect(gate('/?token=wrong', {})).to.include({ kind: 'deny', status: 401 });
    expect(gate(inside('/api/runs'), { cookie: 'dstack_ui=wrong' })).to.include({ kind: 'deny', status: 401 });
    expect(gate(inside('/api/runs'), { cookie: `dstack_ui=${TOKEN}x` })).to.include({ kind: 'deny', status: 401 });
  });

  it('turns the token in the printed URL into a login whose cookie is scoped to the prefix, and then lets the cookie in below it', () => {
    expect(gate(`/?token=${TOKEN}`, {})).to.deep.equal({ kind: 'login' });
    const cookie = loginCookie(TOKEN, PREFIX);
    expect(cookie).to.equal(`dstack_ui=${TOKEN}; HttpOnly; SameSite=Strict; Path=${PREFIX}`);
    const pair = cookie.split(';')[0] ?? '';
    expect(gate(inside('/api/runs'), { cookie: `other=1; ${pair}` })).to.deep.equal({ kind: 'pass', path: '/api/runs' });
    expect(gate(PREFIX, { cookie: pair })).to.deep.equal({ kind: 'pass', path: '/' });
    // A stale cookie of another dashboard may come first in the header.
    expect(gate(inside('/app.js'), { cookie: `dstack_ui=old; ${pair}` })).to.deep.equal({ kind: 'pass', path: '/app.js' });
    // A script or curl may pass the token as a query below the prefix.
    expect(gate(inside(`/api/runs?token=${TOKEN}`), {})).to.deep.equal({ kind: 'pass', path: '/api/runs' });
  });

  it('answers 401 outside the prefix even with the right cookie or token: only the login lives there', () => {
    const cookie = `dstack_ui=${TOKEN}`;
    for (const path of ['/', '/app.js', '/api/runs', '/api/events', '/s/', `${PREFIX.slice(0, -1)}`, `/s/${'A'.repeat(22)}/api/runs`, `/x${PREFIX}api/runs`]) {
      expect(gate(path, { cookie }), path).to.include({ kind: 'deny', status: 401 });
    }
    expect(gate(`/api/runs?token=${TOKEN}`, {})).to.include({ kind: 'deny', status: 401 });
    expect(gate(`/?token=${TOKEN}`, { cookie }, 'POST')).to.include({ kind: 'deny', status: 401 });
  });

  it('refuses a foreign Host (DNS rebinding) with 403, even with the right cookie', () => {
    const cookie = `dstack_ui=${TOKEN}`;
    expect(gate(inside('/api/runs'), { cookie, host: 'localhost:' + PORT })).to.deep.equal({ kind: 'pass', path: '/api/runs' });
    for (const host of ['evil.example', `evil.example:${PORT}`, '127.0.0.1:1', '']) expect(gate(inside('/api/runs'), { cookie, host })).to.include({ kind: 'deny', status: 403 });
    expect(gate(`/?token=${TOKEN}`, { host: 'evil.example' })).to.include({ kind: 'deny', status: 403 });
  });

  it('refuses a POST from another origin with 403, and takes one with no Origin or its own', () => {
    const cookie = `dstack_ui=${TOKEN}`;
    const stop = inside('/api/runs/a-b-1/stop');
    expect(gate(stop, { cookie, origin: 'http://evil.example' }, 'POST')).to.include({ kind: 'deny', status: 403 });
    expect(gate(stop, { cookie, origin: `http://127.0.0.1:${PORT}` }, 'POST')).to.deep.equal({ kind: 'pass', path: '/api/runs/a-b-1/stop' });
    expect(gate(stop, { cookie }, 'POST')).to.deep.equal({ kind: 'pass', path: '/api/runs/a-b-1/stop' });
  });

  it('reads cookies out of a Cookie header', () => {
    expect(cookieValue('a=1; dstack_ui=t ; b=2', 'dstack_ui')).to.equal('t');
    expect(cookieValue('xdstack_ui=t', 'dstack_ui')).to.equal(undefined);
    expect(cookieValue(undefined, 'dstack_ui')).to.equal(undefined);
    expect(cookieValues('dstack_ui=a; x=1; dstack_ui=b', 'dstack_ui')).to.deep.equal(['a', 'b']);
  });
});
