import { isMap, isScalar, type Document, type Node, type YAMLMap } from 'yaml';

/** A hosted-era (Jan–Jul 2022) construct found in a workflow, with the node to point at. */
export interface LegacyFinding {
  node: Node | null;
  message: string;
}

const HOSTED_KEYS: Record<string, string> = {
  'depends-on': '`depends-on` is from the hosted 2022 format: use `deps:` with `- workflow: NAME` or `- tag: NAME`',
  python_script: '`python_script` is from the hosted 2022 format: use `provider: python` with `file: SCRIPT.py`',
  script: '`script` is from the hosted 2022 format: use `file: SCRIPT.py` (python provider) or `commands:` (bash provider)',
  template: '`template` is from the hosted 2022 format: move its keys (commands, resources, ...) up into the workflow and set `provider: bash` or `provider: docker`',
  variables: '`variables` is from the hosted 2022 format: pass values with `dstack run WORKFLOW ARGS` and use `${{ run.args }}`',
};

const VARIABLE = /\$\{\{\s*([^}]*?)\s*\}\}/g;
const KNOWN_VARIABLES = new Set(['run.args', 'run.name']);

/** Finds hosted-era keys and forms in one workflow map; each finding names its replacement. */
export function findHostedForms(item: YAMLMap): LegacyFinding[] {
  const out: LegacyFinding[] = [];
  let provider: Node | null = null;
  let image = false;
  for (const pair of item.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : '';
    const keyNode = (pair.key as Node | null) ?? null;
    const hosted = HOSTED_KEYS[key];
    if (hosted) out.push({ node: keyNode, message: hosted });
    if (key === 'environment' && isMap(pair.value)) {
      out.push({ node: keyNode, message: '`environment` as a map is from the hosted 2022 format: use `env:` with a list of `- K=V` items' });
    }
    if (key === 'provider') {
      provider = keyNode;
      if (isMap(pair.value)) {
        out.push({ node: keyNode, message: '`provider: {repo, name}` (a provider from a repo) is from the hosted 2022 format: use a built-in provider such as `provider: bash`' });
      }
    }
    if (key === 'image') image = true;
  }
  if (provider === null && out.length === 0) {
    out.push({
      node: (item as Node),
      message: image
        ? 'workflow has `image` but no `provider` (the hosted 2022 format): add `provider: docker`'
        : 'workflow has no `provider`: add `provider: bash` (or python, docker, code, lab, notebook)',
    });
  }
  return out;
}

/** Finds `${{ ... }}` variables other than run.args and run.name anywhere in the document. */
export function findUnknownVariables(doc: Document): LegacyFinding[] {
  const out: LegacyFinding[] = [];
  const visit = (node: unknown): void => {
    if (isScalar(node) && typeof node.value === 'string') {
      for (const m of node.value.matchAll(VARIABLE)) {
        const name = m[1] ?? '';
        if (!KNOWN_VARIABLES.has(name)) {
          out.push({
            node: node as Node,
            message: `\`\${{ ${name} }}\` is not a known variable (hosted-era variables are gone): use \`\${{ run.args }}\` and pass the value as an argument to \`dstack run\``,
          });
        }
      }
    } else if (node && typeof node === 'object' && 'items' in node && Array.isArray(node.items)) {
      for (const it of node.items as unknown[]) {
        if (it && typeof it === 'object' && 'value' in it && 'key' in it) visit(it.value);
        else visit(it);
      }
    }
  };
  visit(doc.contents);
  return out;
}
