// Builds the agent as one self-contained file for the machine image: dist/agent-bundle/
//   dstack-agent.mjs  agent/main.ts with every dependency bundled in (no npm install on the machine)
//   VERSION           the version from package.json, one line
//   package.json      {name, version}: the agent reports its version by walking up to a dstack package.json
// Usage: npm run build:agent
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { build } from 'esbuild';

const root = join(import.meta.dirname, '..');
const outDir = join(root, 'dist', 'agent-bundle');
const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { name: string; version: string };

await rm(outDir, { recursive: true, force: true });
await mkdir(outDir, { recursive: true });
const outfile = join(outDir, 'dstack-agent.mjs');
await build({
  entryPoints: [join(root, 'agent', 'main.ts')],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Not minified: stack traces in the journal of a machine stay readable.
  minify: false,
  legalComments: 'inline',
  logLevel: 'warning',
  // ssh2's optional native addons (faster ciphers, CPU feature probing) stay out: it falls back to Node's crypto.
  external: ['*.node'],
  // Some bundled dependencies call require() or read __dirname (ssh2); ESM has neither, so make them.
  banner: { js: "import{createRequire as __cr}from'node:module';const require=__cr(import.meta.url);import{fileURLToPath as __fu}from'node:url';import{dirname as __dn}from'node:path';const __filename=__fu(import.meta.url);const __dirname=__dn(__filename);" },
});
await writeFile(join(outDir, 'VERSION'), `${pkg.version}\n`);
await writeFile(
  join(outDir, 'package.json'),
  `${JSON.stringify({ name: pkg.name, version: pkg.version, private: true, type: 'module', description: 'dstack agent bundle (built by npm run build:agent)' }, null, 2)}\n`,
);
const code = await readFile(outfile);
const sha = createHash('sha256').update(code).digest('hex');
process.stdout.write(`${outfile}: ${pkg.name} agent ${pkg.version}, ${(code.length / 2 ** 20).toFixed(1)} MiB, sha256 ${sha}\n`);
