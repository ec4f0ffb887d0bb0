import { expect } from 'chai';
import { parse } from 'yaml';
import { findPython } from '../../agent/providers.js';
import { SHARED_CORPUS, hasSharedCorpus, ownCorpus, sharedCorpus, type CorpusFile } from '../support/corpus.js';
import { dstack, killAgents, makeHome, makeRepo, removeAll } from '../support/cli.js';

const HAS_PY37 = (await findPython('3.7', process.env.PATH ?? '')) !== undefined;

/** A workflow that can really run on this machine (no GPU, PyPI or Docker Hub), with the repo files it reads. */
interface Runnable {
  args?: string[];
  env?: Record<string, string>;
  files?: Record<string, string>;
  expect: RegExp;
  /** Refused at submit (exit 2, one line), as a workflow this machine can't run is. */
  refusedWith?: RegExp;
}

/** Our own fixtures (file:workflow) that run here. */
const OWN_RUNNABLE: Record<string, Runnable> = {
  'bash.yaml:hello': { expect: /^Hello, fixtures!$/m },
  'bash.yaml:one-string': { expect: /^first\nsecond$/m },
  'bash.yaml:env-list': { env: { FIXTURE_BARE: 'from the shell' }, expect: /^GREETING=hi there\nFIXTURE_BARE=\*\*\*\nFIXTURE_BARE_LEN=14$/m },
  'bash.yaml:env-map': { expect: /^COUNT=3 MODE=fast$/m },
  'bash.yaml:in-subdir': { files: { 'sub/dir/here.txt': 'read from sub/dir\n' }, expect: /^read from sub\/dir$/m },
  'bash.yaml:args': { args: ['-l', 'Hello, world!'], expect: /^\[-l\]\n\[Hello, world!\]\nrun [a-z]+-[a-z]+-\d+$/m },
  'bash.yaml:before': { expect: /^before\nmain$/m },
  'setup.yaml:with-setup': { expect: /^set up\nthen run$/m },
  'python.yaml:py-hello': { files: { 'scripts/hello.py': 'print("Hello from the python provider")\n' }, expect: /^Hello from the python provider$/m },
  'python.yaml:py-args': { args: ['--lr', '0.1'], files: { 'scripts/echo_args.py': 'import sys\nprint(sys.argv[1:])\n' }, expect: /^\['--lr', '0\.1'\]$/m },
  'python.yaml:py-args-list': { files: { 'scripts/echo_args.py': 'import sys\nprint(sys.argv[1:])\n' }, expect: /^\['--epochs', '10'\]$/m },
  // Runs in file order: consume restores produce's artifact.
  'artifacts-deps.yaml:produce': { expect: /^produced$/m },
  'artifacts-deps.yaml:consume': { expect: /^made by produce$/m },
  'resources.yaml:here': { expect: /^runs locally$/m },
};

// See test/unit/spec.test.ts: labelled hosted-2022, but valid 0.0.x python-provider syntax.
const SHARED_HOSTED_BUT_VALID_OSS = new Set(['dstackai-dstack__0391aa1d7__1.yaml']);

/** Workflows from the shared corpus (file:workflow) that run here. */
const SHARED_RUNNABLE: Record<string, Runnable> = {
  'dstackai-dstack-examples__f8c6f11__8.yaml:hello': { expect: /^Hello, world!$/m },
  'dstackai-dstack-examples__f8c6f11__7.yaml:hello-env': { expect: /^DSTACK_ENV_2=VAL2$/m },
  'dstackai-dstack-examples__f8c6f11__11.yaml:local-hello': { expect: /^Hello, world!$/m },
  // Python 3.7 is there on machines with pyenv's 3.7; elsewhere `dstack run` must refuse it at submit, saying so.
  'dstackai-dstack-examples__f8c6f11__10.yaml:python-version': HAS_PY37
    ? { expect: /^Python 3\.7\.\d+$/m }
    : { expect: /^$/, refusedWith: /asks for `python: 3\.7`, which no interpreter on this machine provides/ },
  'dstackai-dstack__0391aa1d7__1.yaml:hello': { files: { 'examples/hello/main.py': 'print("Hello from the python provider")\n' }, expect: /^Hello from the python provider$/m },
  'dstackai-dstack-examples__f8c6f11__2.yaml:print-args': {
    args: ['-l', 'Hello, world!'],
    files: { 'args/print-args.py': 'import sys\nprint(sys.argv[1:])\n' },
    expect: /^\['-l', 'Hello, world!'\]$/m,
  },
  'dstackai-dstack-examples__f8c6f11__10.yaml:hello-py': { files: { 'python/hello.py': 'print("Hello, world!")\n' }, expect: /^Hello, world!$/m },
};

/** Every workflow of each valid file dry-runs and the runnable ones run; each hosted file is refused line by line. */
function corpusSuite(title: string, files: CorpusFile[], runnable: Record<string, Runnable>, hostedButValid: Set<string>): void {
  describe(title, function () {
    this.timeout(120_000);
    const home = makeHome();
    after(async () => {
      await killAgents(home);
      removeAll(home);
    });

    for (const f of files) {
      const valid = f.era !== 'hosted-2022' || hostedButValid.has(f.file);
      const names = ((parse(f.text) as { workflows: Array<{ name: string }> }).workflows ?? []).map((w) => w.name);
      const runs = (name: string): Runnable | undefined => runnable[`${f.file}:${name}`];
      if (valid) {
        it(`${f.file} (${f.era}) at ${f.path}: every workflow dry-runs${names.some((n) => runs(n)) ? ', and the runnable ones run' : ''}`, async () => {
          const extra = Object.assign({}, ...names.map((n) => runs(n)?.files ?? {})) as Record<string, string>;
          const repo = makeRepo({ [f.path]: f.text, ...extra });
          try {
            for (const name of names) {
              const r = await dstack(['run', name, '--dry-run', 'arg1'], { cwd: repo, home });
              expect(r.code, `${name}: ${r.stderr}`).to.equal(0);
              expect((JSON.parse(r.stdout) as { workflow: string }).workflow).to.equal(name);
            }
            for (const name of names.filter((n) => runs(n))) {
              const spec = runs(name)!;
              const r = await dstack(['run', name, ...(spec.args ?? [])], { cwd: repo, home, ...(spec.env ? { env: spec.env } : {}) });
              if (spec.refusedWith) {
                expect(r.code).to.equal(2);
                expect(r.stderr.trimEnd().split('\n')).to.have.length(1);
                expect(r.stderr).to.match(spec.refusedWith);
                continue;
              }
              expect(r.code, `${name}: ${r.stderr}`).to.equal(0);
              expect(r.stdout, name).to.match(spec.expect);
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
            const at = f.path.replace(/[.]/g, '\\.');
            for (const line of lines) expect(line).to.match(new RegExp(`^${at}:\\d+:\\d+: .*(use \`|use a built-in provider|add \`provider: |move its keys)`));
          } finally {
            removeAll(repo);
          }
        });
      }
    }
  });
}

corpusSuite('e2e: our own corpus (test/fixtures/workflows) through the CLI', ownCorpus(), OWN_RUNNABLE, new Set());

if (hasSharedCorpus()) {
  corpusSuite('e2e: the shared corpus of real 2022 files through the CLI', sharedCorpus(), SHARED_RUNNABLE, SHARED_HOSTED_BUT_VALID_OSS);
} else {
  describe('e2e: the shared corpus of real 2022 files through the CLI', () => {
    it.skip(`skipped: ${SHARED_CORPUS} is not there (CI has it)`);
  });
}
