import { expect } from 'chai';
import { ansiSegments, LineSplitter } from '../../coordinator/ui/web/ansi-segments.js';

describe('ui ANSI to styled text', () => {
  it('keeps markup in a log line as text, and colours SGR runs', () => {
    const s = ansiSegments('<script>alert(1)</script> \x1b[31mred\x1b[0m plain <img src=x onerror=alert(2)>');
    expect(s.map((x) => x.text).join('')).to.equal('<script>alert(1)</script> red plain <img src=x onerror=alert(2)>');
    expect(s.find((x) => x.text === 'red')).to.deep.equal({ text: 'red', color: 'rgb(187, 0, 0)' });
    expect(s.find((x) => x.text.includes('<script>'))).to.deep.equal({ text: '<script>alert(1)</script> ' });
  });

  it('removes every other escape and control character: window titles, cursor moves, bells', () => {
    const s = ansiSegments('\x1b]0;pwned\x07a\x1b[2Kb\x1b[1;38;2;10;20;30mc\x07\x1b[0m\x1b]8;;http://x\x1b\\d\x08');
    const text = s.map((x) => x.text).join('');
    expect(text).to.equal('abcd');
    expect(s.find((x) => x.text === 'c')).to.deep.equal({ text: 'c', color: 'rgb(10, 20, 30)', bold: true });
  });

  it('shows what came after a carriage return, as a terminal does, with its colour kept', () => {
    expect(ansiSegments('10%\r\x1b[32m50%\r100%')).to.deep.equal([{ text: '100%', color: 'rgb(0, 187, 0)' }]);
    expect(ansiSegments('done\r')).to.deep.equal([{ text: 'done' }]);
  });

  it('cuts streamed output into whole lines', () => {
    const split = new LineSplitter();
    expect(split.push('a\nb')).to.deep.equal(['a']);
    expect(split.push('c\n\nd')).to.deep.equal(['bc', '']);
    expect(split.rest()).to.equal('d');
  });
});
