import { expect } from 'chai';
import { parse } from 'yaml';
import { findPython } from '../../agent/providers.js';
import { corpus } from '../support/corpus.js';
import { dstack, killAgents, makeHome, makeRepo, removeAll } from '../support/cli.js';

const HAS_PY37 = (await findPython('3.7', process.env.PATH ?? '')) !== undefined;

// See test/unit/spec.test.ts: labelled hosted-2022, but valid 0.0.x python-provider syntax.
const HOSTED_BUT_VALID_OSS = new Set(['dstackai-dstack__0391aa1d7__1.yaml']);

/**
 * Workflows from the corpus (file:workflow) that can really run on this machine (no GPU, PyPI or
 * Docker Hub), with the repo files they read.
 */
const RUNNABLE: Record<string, { args?: string[]; files?: Record<string, string>; expect: RegExp; failsWith?: RegExp }> = {
  'dstackai-dstack-examples__f8c6f11__8.yaml:hello': { expect: /^Hello, world!$/m },
  'dstackai-dstack-examples__f8c6f11__7.yaml:hello-env': { expect: /^DSTACK_ENV_2=VAL2$/m },
  'dstackai-dstack-examples__f8c6f11__11.yaml:local-hello': { expect: /^Hello, world!$/m },
  // Python 3.7 is there on machines with pyenv's 3.7; elsewhere the run must fail saying so.
  'dstackai-dstack-examples__f8c6f11__10.yaml:python-version': HAS_PY37
    ? { expect: /^Python 3\.7\.\d+$/m }
    : { expect: /^$/, failsWith: /Python 3\.7 is not installed on this agent/ },
  'dstackai-dstack__0391aa1d7__1.yaml:hello': { files: { 'examples/hello/main.py': 'print("Hello from the python provider")\n' }, expect: /^Hello from the python provider$/m },
  'dstackai-dstack-examples__f8c6f11__2.yaml:print-args': {
    args: ['-l', 'Hello, world!'],
    files: { 'args/print-args.py': 'import sys\nprint(sys.argv[1:])\n' },
    expect: /^\['-l', 'Hello, world!'\]$/m,
  },
  'dstackai-dstack-examples__f8c6f11__10.yaml:hello-py': { files: { 'python/hello.py': 'print("Hello, world!")\n' }, expect: /^Hello, world!$/m },
};

describe('e2e: the shared corpus through the CLI', function () {
  this.timeout(120_000);
  const home = makeHome();
  after(async () => {
    await killAgents(home);
    removeAll(home);
  });

  for (const f of corpus()) {
    const valid = f.era !== 'hosted-2022' || HOSTED_BUT_VALID_OSS.has(f.file);
    const names = ((parse(f.text) as { workflows: Array<{ name: string }> }).workflows ?? []).map((w) => w.name);
    const runnable = (name: string): (typeof RUNNABLE)[string] | undefined => RUNNABLE[`${f.file}:${name}`];
    if (valid) {
      it(`${f.file} (${f.era}) at ${f.path}: every workflow dry-runs${names.some((n) => runnable(n)) ? ', and the runnable ones run' : ''}`, async () => {
        const extra = Object.assign({}, ...names.map((n) => runnable(n)?.files ?? {})) as Record<string, string>;
        const repo = makeRepo({ [f.path]: f.text, ...extra });
        try {
          for (const name of names) {
            const r = await dstack(['run', name, '--dry-run', 'arg1'], { cwd: repo, home });
            expect(r.code, `${name}: ${r.stderr}`).to.equal(0);
            expect((JSON.parse(r.stdout) as { workflow: string }).workflow).to.equal(name);
          }
          for (const name of names.filter((n) => runnable(n))) {
            const spec = runnable(name)!;
            const r = await dstack(['run', name, ...(spec.args ?? [])], { cwd: repo, home });
            if (spec.failsWith) {
              expect(r.code).to.equal(1);
              expect(r.stderr).to.match(spec.failsWith);
              continue;
            }
            expect(r.code, `${name}: ${r.stderr}`).to.equal(0);
            expect(r.stdout).to.match(spec.expect);
          }
        } finally {
          removeAll(repo);
        }
      });
    } else {
      it(`${f.file} (hosted-2022) is rejected: one line per problem with file:line:col and the replacement`, async () => {
        const repo = makeRepo({ [f.path]: f.text });
        try {
          const r = await dstack(['run', names[0] ?? 'x'], { cwd: repo, home });
          expect(r.code).to.equal(1);
          expect(r.stdout).to.equal('');
          const lines = r.stderr.trim().split('\n');
          for (const line of lines) expect(line).to.match(/^\.dstack\/workflows\.yaml:\d+:\d+: .*(use `|add `provider: docker`|move its keys)/);
        } finally {
          removeAll(repo);
        }
      });
    }
  }
});
