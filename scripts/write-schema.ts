// Writes schema/workflows.schema.json from the zod schema (the one source of truth).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { workflowsJsonSchema } from '../common/spec/schema.js';

const out = join(import.meta.dirname, '..', 'schema', 'workflows.schema.json');
writeFileSync(out, `${JSON.stringify(workflowsJsonSchema(), null, 2)}\n`);
process.stdout.write(`wrote ${out}\n`);
