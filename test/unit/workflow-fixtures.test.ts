import { expect } from 'chai';
import { readdirSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { parseJobMessage } from '../../agent/worker.js';
import type { CodeRef } from '../../common/code-ref.js';
import { formatProblem, type SpecProblem } from '../../common/errors.js';
import { buildJobSpec } from '../../common/spec/job-spec.js';
import { parseWorkflowsText } from '../../common/spec/load.js';
import { PROVIDERS, WorkflowSchema } from '../../common/spec/schema.js';
import { OWN_CORPUS, ownCorpus } from '../support/corpus.js';

const CODE: CodeRef = { commit: 'abc', branch: 'main', remoteUrl: null, archiveKey: null, diffKey: null, diffSha256: null, untrackedKey: null, untrackedSha256: null };

type Raw = Record<string, unknown>;
const files = ownCorpus();
const accepted = files.filter((f) => f.era !== 'hosted-2022');
const hosted = files.filter((f) => f.era === 'hosted-2022');
const rawWorkflows = accepted.flatMap((f) => (parseYaml(f.text) as { workflows: Raw[] }).workflows);

function parse(text: string, file: string): { names: string[]; problems: SpecProblem[] } {
  const problems: SpecProblem[] = [];
  const workflows = parseWorkflowsText(text, file, problems);
  return { names: workflows.map((w) => w.workflow.name), problems };
}

const obj = (v: unknown): Raw => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Raw) : {});
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const res = (w: Raw): Raw => obj(w.resources);

/** Each 2022 syntax form, and how to tell that a workflow uses it. */
const FORMS: Record<string, (w: Raw) => boolean> = {
  ...Object.fromEntries(PROVIDERS.map((p) => [`provider: ${p}`, (w: Raw) => w.provider === p])),
  help: (w) => typeof w.help === 'string',
  'commands as a list': (w) => Array.isArray(w.commands),
  'commands as one string': (w) => typeof w.commands === 'string',
  before_run: (w) => w.before_run !== undefined,
  setup: (w) => w.setup !== undefined,
  'python version': (w) => w.python !== undefined,
  'python provider version': (w) => w.provider === 'python' && w.version !== undefined,
  requirements: (w) => typeof w.requirements === 'string',
  file: (w) => typeof w.file === 'string',
  'args as a string': (w) => typeof w.args === 'string',
  'args as a list': (w) => Array.isArray(w.args),
  'env K=V item': (w) => list(w.env).some((e) => String(e).includes('=')),
  'env bare name': (w) => list(w.env).some((e) => !String(e).includes('=')),
  'env as a map': (w) => Object.keys(obj(w.env)).length > 0,
  working_dir: (w) => typeof w.working_dir === 'string',
  'artifact as a path': (w) => list(w.artifacts).some((a) => typeof a === 'string'),
  'artifact as {path, mount}': (w) => list(w.artifacts).some((a) => obj(a).path !== undefined && obj(a).mount !== undefined),
  'dep workflow:': (w) => list(w.deps).some((d) => obj(d).workflow !== undefined),
  'dep tag:': (w) => list(w.deps).some((d) => obj(d).tag !== undefined),
  'dep as NAME': (w) => list(w.deps).some((d) => typeof d === 'string' && !d.startsWith(':')),
  'dep as :TAG': (w) => list(w.deps).some((d) => typeof d === 'string' && d.startsWith(':')),
  'ports as a count': (w) => typeof w.ports === 'number',
  'ports as a list': (w) => Array.isArray(w.ports),
  image: (w) => typeof w.image === 'string',
  entrypoint: (w) => typeof w.entrypoint === 'string',
  'resources.cpu': (w) => res(w).cpu !== undefined,
  'resources.memory': (w) => res(w).memory !== undefined,
  'resources.gpu as a count': (w) => typeof res(w).gpu === 'number',
  'resources.gpu as {count, name, memory}': (w) => ['count', 'name', 'memory'].every((k) => obj(res(w).gpu)[k] !== undefined),
  'resources.gpu as {memory} alone': (w) => Object.keys(obj(res(w).gpu)).join() === 'memory',
  'resources.shm_size': (w) => res(w).shm_size !== undefined,
  'resources.interruptible': (w) => res(w).interruptible === true,
  'resources.local': (w) => res(w).local === true,
  '${{ run.args }}': (w) => JSON.stringify(w).includes('${{ run.args }}'),
  '${{ run.name }}': (w) => JSON.stringify(w).includes('${{ run.name }}'),
};

describe('workflow spec: our own corpus in test/fixtures/workflows', () => {
  it('lists in its README exactly the files that are there, accepted and hosted', () => {
    const there = readdirSync(OWN_CORPUS).filter((n) => n.endsWith('.yaml')).sort();
    expect(files.map((f) => f.file).sort()).to.deep.equal(there);
    expect(accepted.length).to.be.at.least(5);
    expect(hosted.length).to.be.at.least(3);
  });

  for (const f of accepted) {
    it(`accepts ${f.era} ${f.file} and builds a job spec for every workflow`, () => {
      const problems: SpecProblem[] = [];
      const workflows = parseWorkflowsText(f.text, f.file, problems);
      expect(problems.map(formatProblem)).to.deep.equal([]);
      expect(workflows.map((w) => w.workflow.name)).to.deep.equal((parseYaml(f.text) as { workflows: Raw[] }).workflows.map((w) => w.name));
      for (const located of workflows) {
        const spec = buildJobSpec({ located, repoId: 'r', runName: 'lazy-owl-1', jobId: 'j1', args: ['--epochs', '2'], shellEnv: {}, code: CODE, now: new Date(0) });
        expect(spec.workflow).to.equal(located.workflow.name);
        expect(JSON.stringify(spec)).not.to.include('${{ run.args');
        // What the agent reads from the queue is the spec the CLI built, whole: the schema accepts every form.
        expect(parseJobMessage(JSON.stringify(spec))).to.deep.equal({ kind: 'spec', spec: JSON.parse(JSON.stringify(spec)) as unknown });
      }
    });
  }

  for (const f of hosted) {
    it(`rejects hosted-era ${f.file}: one line per problem, with file:line:col and what to write instead`, () => {
      const { names, problems } = parse(f.text, f.file);
      expect(names).to.deep.equal([]);
      expect(problems.length).to.be.greaterThan(0);
      for (const p of problems) {
        const line = formatProblem(p);
        expect(line).to.match(new RegExp(`^${f.file.replace(/\./g, '\\.')}:\\d+:\\d+: `));
        expect(line).to.match(/use `|use a built-in provider|add `provider|move its keys/);
        expect(line).not.to.include('\n');
      }
    });
  }

  it('uses every 2022 syntax form the spec accepts', () => {
    const missing = Object.entries(FORMS)
      .filter(([, uses]) => !rawWorkflows.some(uses))
      .map(([form]) => form);
    expect(missing).to.deep.equal([]);
  });

  it('uses every workflow key of the schema (but `cache`, `idle_duration` and `max_duration`, which are newer than 2022)', () => {
    const used = new Set(rawWorkflows.flatMap((w) => Object.keys(w)));
    const newer = new Set(['cache', 'idle_duration', 'max_duration']);
    const unused = Object.keys(WorkflowSchema.shape).filter((k) => !newer.has(k) && !used.has(k));
    expect(unused).to.deep.equal([]);
  });

  it('has a hosted file for each hosted-era form, and each is named with its replacement', () => {
    const messages = hosted.flatMap((f) => parse(f.text, f.file).problems.map((p) => p.message)).join('\n');
    for (const form of ['`variables`', '`python_script`', '`depends-on`', '`template`', '`script`', '`environment` as a map', '`provider: {repo, name}`', 'add `provider: docker`', 'add `provider: bash`', 'is not a known variable']) {
      expect(messages, form).to.include(form);
    }
  });
});
