import { expect } from 'chai';
import { parseRoute } from '../../coordinator/ui/web/route.js';
import { WEB_LINK, shown } from '../../coordinator/ui/web/links.js';
import { StreamText } from '../../coordinator/ui/web/log-text.js';

const b64 = (bytes: Buffer): string => bytes.toString('base64');

describe('ui web parts: routes, links and log text', () => {
  it('a malformed run name in the hash shows the runs page instead of throwing', () => {
    expect(parseRoute('#/run/%E0', ['runs', 'machines', 'cost', 'services'])).to.deep.equal({ page: 'runs' });
    expect(parseRoute('#/run/calm-otter-1', ['runs', 'machines', 'cost', 'services'])).to.deep.equal({ page: 'run', runName: 'calm-otter-1' });
    expect(parseRoute('#/machines', ['runs', 'machines', 'cost', 'services'])).to.deep.equal({ page: 'machines' });
  });

  it('links: only http(s) is clickable, and a token in the query is not shown', () => {
    expect(['http://127.0.0.1:9000/?tkn=s3cret', 'https://x.example/a', 'javascript:alert(1)', 'httpfoo:x', "(bob@box's)"].map((u) => WEB_LINK.test(u))).to.deep.equal([true, true, false, false, false]);
    expect(shown('http://127.0.0.1:9000/?tkn=s3cret')).to.equal('http://127.0.0.1:9000/?…');
    expect(shown('http://127.0.0.1:8080')).to.equal('http://127.0.0.1:8080');
  });

  it('a character whose bytes span two records is shown whole, and a cut one at the end as U+FFFD', () => {
    const euro = Buffer.from('€ ok\n');
    const t = new StreamText();
    expect(t.push(b64(euro.subarray(0, 1))) + t.push(b64(euro.subarray(1, 2)))).to.equal('');
    expect(t.push(b64(euro.subarray(2)))).to.equal('€ ok\n');
    expect(t.push(b64(Buffer.from([0xe2, 0x82])))).to.equal('');
    expect(t.end()).to.equal('\ufffd');
  });
});
