/** What systemd would run for a service: the argv of its ExecStart= and its environment. */
export interface ServiceCommand {
  argv: string[];
  env: Record<string, string>;
}

/** The PATH systemd gives system services (Debian's build; Ubuntu's adds /snap/bin). */
export const SYSTEMD_DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Splits a systemd value into words, honouring double and single quotes. */
function words(value: string): string[] {
  const out: string[] = [];
  for (const m of value.matchAll(/"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g)) out.push(m[1] ?? m[2] ?? m[3] ?? '');
  return out;
}

/**
 * Reads a service unit the way systemd does for the parts the agent image uses: `Environment=`
 * lines, then `EnvironmentFile=` (a leading `-` means optional; its settings win over Environment=),
 * over systemd's default PATH; and the one `ExecStart=` command. `readFile` reads a path of the
 * machine the unit runs on (undefined when missing). Anything this reader would get wrong — line
 * continuations, `$VAR` expansion, ExecStart prefixes, `%` specifiers — is refused, not guessed.
 */
export function serviceCommand(unitText: string, readFile: (path: string) => string | undefined): ServiceCommand {
  let section = '';
  const env: Record<string, string> = { PATH: SYSTEMD_DEFAULT_PATH };
  const files: string[] = [];
  let exec: string | undefined;
  for (const raw of unitText.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    if (line.endsWith('\\')) throw new Error(`line continuations are not supported: ${line}`);
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = header[1] ?? '';
      continue;
    }
    if (section !== 'Service') continue;
    const eq = line.indexOf('=');
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    if (/[%$]/.test(value) && ['Environment', 'EnvironmentFile', 'ExecStart'].includes(key)) {
      throw new Error(`specifiers and variables are not supported: ${line}`);
    }
    if (key === 'Environment') {
      for (const w of words(value)) {
        const i = w.indexOf('=');
        if (i <= 0) throw new Error(`bad Environment= assignment: ${w}`);
        env[w.slice(0, i)] = w.slice(i + 1);
      }
    } else if (key === 'EnvironmentFile') {
      files.push(value);
    } else if (key === 'ExecStart') {
      if (exec !== undefined) throw new Error('more than one ExecStart=');
      if (/^[-@:+!]/.test(value)) throw new Error(`ExecStart prefixes are not supported: ${value}`);
      exec = value;
    }
  }
  for (const spec of files) {
    const optional = spec.startsWith('-');
    const path = optional ? spec.slice(1) : spec;
    const text = readFile(path);
    if (text === undefined) {
      if (optional) continue;
      throw new Error(`EnvironmentFile ${path} is missing`);
    }
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
      const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
      if (!m) throw new Error(`bad line in ${path}: ${line}`);
      const v = m[2] ?? '';
      env[m[1] ?? ''] = /^"(.*)"$|^'(.*)'$/.test(v) ? v.slice(1, -1) : v;
    }
  }
  if (exec === undefined) throw new Error('the unit has no ExecStart=');
  return { argv: words(exec), env };
}
