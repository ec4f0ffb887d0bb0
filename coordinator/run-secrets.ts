import type { ParsedWorkflow } from '../common/spec/schema.js';
import type { JobSpec } from '../common/spec/job-spec.js';
import { SERVER_TOKEN } from '../common/dev-tools.js';

/** The bare names (`NAME`, not `NAME=VALUE`) of a workflow's `env` list and of `-e` flags. */
export function bareEnvNames(env: ParsedWorkflow['env'], flags: readonly string[]): Set<string> {
  const items = [...(Array.isArray(env) ? env : []), ...flags];
  return new Set(items.filter((item) => !item.includes('=')));
}

/**
 * Takes the values of bare env names out of the spec: the spec keeps their names (`runSecrets`),
 * and the values go to the secret store under the run, so that no record or message holds them.
 */
export function pinBareEnv(spec: JobSpec, bare: ReadonlySet<string>): { spec: JobSpec; values: Record<string, string> } {
  const env: Record<string, string> = {};
  const values: Record<string, string> = {};
  for (const [k, v] of Object.entries(spec.env)) {
    if (bare.has(k)) values[k] = v;
    else env[k] = v;
  }
  const names = Object.keys(values).sort();
  if (names.length === 0) return { spec, values };
  return { spec: { ...spec, env, runSecrets: names, specVersion: spec.specVersion > 3 ? spec.specVersion : 3 }, values };
}

/** Adds a dev environment's token to the run's pinned secrets (as SERVER_TOKEN): the agent gives it to the server, and masks it. */
export function withServerToken(pinned: { spec: JobSpec; values: Record<string, string> }, token: string | undefined): { spec: JobSpec; values: Record<string, string> } {
  if (token === undefined) return pinned;
  const names = [...new Set([...(pinned.spec.runSecrets ?? []), SERVER_TOKEN])].sort();
  return { spec: { ...pinned.spec, runSecrets: names, specVersion: 4 }, values: { ...pinned.values, [SERVER_TOKEN]: token } };
}
