import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { workflowsJsonSchema } from '../../common/spec/schema.js';
import { ROOT } from '../support/cli.js';

describe('published JSON Schema', () => {
  it('is what the zod schema generates (run `npm run schema` after changing it)', () => {
    const published = JSON.parse(readFileSync(join(ROOT, 'schema', 'workflows.schema.json'), 'utf8')) as unknown;
    expect(published).to.deep.equal(workflowsJsonSchema());
  });

  it('describes the workflow keys editors should complete', () => {
    const schema = workflowsJsonSchema() as { properties: { workflows: { items: { properties: Record<string, unknown>; required: string[] } } } };
    const item = schema.properties.workflows.items;
    expect(Object.keys(item.properties)).to.include.members(['name', 'provider', 'commands', 'before_run', 'setup', 'python', 'env', 'artifacts', 'deps', 'resources', 'ports', 'working_dir']);
    expect(item.required).to.deep.equal(['name', 'provider']);
  });
});
