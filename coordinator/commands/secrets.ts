import { ConflictError, NotFoundError, UsageError } from '../../common/errors.js';
import { MIN_MASKED_BYTES, checkSecretName, type SecretStore } from '../../common/secrets.js';
import { repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';

export interface SecretValueOptions {
  name: string;
  /** Given on the command line; otherwise read through `ctx.readSecret`. */
  value: string | undefined;
}

function storeOf(ctx: Context): SecretStore {
  if (!ctx.secrets) throw new UsageError('this backend has no secret store');
  return ctx.secrets;
}

async function valueOf(ctx: Context, o: SecretValueOptions): Promise<string> {
  if (o.value !== undefined) return o.value;
  if (!ctx.readSecret) throw new UsageError(`give the value: dstack secrets add ${o.name} VALUE`);
  return ctx.readSecret(`Value of ${o.name}: `);
}

function warnShort(ctx: Context, name: string, value: string): void {
  if (Buffer.byteLength(value) < MIN_MASKED_BYTES) ctx.out.note(`warning: the value of ${name} is shorter than ${MIN_MASKED_BYTES} bytes, so it is not masked in logs`);
}

/** `dstack secrets add NAME [VALUE]`: refuses a name that exists (use update). */
export async function secretsAddCommand(ctx: Context, o: SecretValueOptions): Promise<number> {
  checkSecretName(o.name);
  const store = storeOf(ctx);
  const scope = { repoId: (await repoInfo(ctx.cwd)).repoId };
  if ((await store.get(scope, o.name)) !== undefined) throw new ConflictError(`secret \`${o.name}\` exists: use \`dstack secrets update ${o.name}\``);
  const value = await valueOf(ctx, o);
  await store.put(scope, o.name, value, { ifAbsent: true });
  warnShort(ctx, o.name, value);
  ctx.out.line(`Secret ${o.name} added.`);
  return 0;
}

/** `dstack secrets update NAME [VALUE]`: the secret must exist. */
export async function secretsUpdateCommand(ctx: Context, o: SecretValueOptions): Promise<number> {
  checkSecretName(o.name);
  const store = storeOf(ctx);
  const scope = { repoId: (await repoInfo(ctx.cwd)).repoId };
  if ((await store.get(scope, o.name)) === undefined) throw new NotFoundError(`no secret \`${o.name}\` in this repo: add it with \`dstack secrets add ${o.name}\``);
  const value = await valueOf(ctx, o);
  await store.put(scope, o.name, value);
  warnShort(ctx, o.name, value);
  ctx.out.line(`Secret ${o.name} updated.`);
  return 0;
}

/** `dstack secrets list`: names only, never values. */
export async function secretsListCommand(ctx: Context): Promise<number> {
  const names = await storeOf(ctx).list({ repoId: (await repoInfo(ctx.cwd)).repoId });
  if (names.length === 0) ctx.out.note('No secrets. Add one with `dstack secrets add NAME`.');
  for (const name of names) ctx.out.line(name);
  return 0;
}

/** `dstack secrets delete NAME [-y]`. */
export async function secretsDeleteCommand(ctx: Context, o: { name: string; yes: boolean }): Promise<number> {
  checkSecretName(o.name);
  const store = storeOf(ctx);
  const scope = { repoId: (await repoInfo(ctx.cwd)).repoId };
  if ((await store.get(scope, o.name)) === undefined) throw new NotFoundError(`no secret \`${o.name}\` in this repo`);
  if (!(await ctx.confirm(`Delete secret ${o.name}?`, o.yes))) return 1;
  await store.delete(scope, o.name);
  ctx.out.line(`Secret ${o.name} deleted.`);
  return 0;
}
