import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The host's python3, which the fake envs' `python` runs for everything but the version probes. */
export const HOST_PYTHON = execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();

/**
 * The `python` of a fake env: it answers the version probes (`sys.version_info`, `--version`) as
 * Python `version`, `sys.executable` as its own path, and runs the host's python3 for the rest.
 */
export function fakeEnvPython(version: string): string {
  return `#!/bin/sh
if [ "$1" = -c ]; then
  case "$2" in
    *version_info*) echo ${version}; exit 0 ;;
    *sys.executable*) echo "$0"; exit 0 ;;
  esac
fi
if [ "$1" = --version ]; then echo "Python ${version}.99 (fake env)"; exit 0; fi
exec ${HOST_PYTHON} "$@"
`;
}

/** Writes a fake env's `bin/python` under `prefix`. */
export function makeFakeEnv(prefix: string, version: string): void {
  mkdirSync(join(prefix, 'bin'), { recursive: true });
  writeFileSync(join(prefix, 'bin', 'python'), fakeEnvPython(version));
  chmodSync(join(prefix, 'bin', 'python'), 0o755);
}

/** A `conda` stand-in in its own folder (put `bin` first on PATH); `calls()` is what it was run with, one call a line. */
export interface FakeConda {
  bin: string;
  calls(): string[];
  /** The HOME of each call. */
  homes(): string[];
  /** With a gate, `conda create` waits until `open()` before it makes anything. */
  open(): void;
}

/**
 * `dir/bin/conda`: records each call in `dir/calls`, and for `create --prefix DIR python=X.Y` makes
 * DIR/bin/python as fakeEnvPython(X.Y) and prints a line. `shell.bash hook` prints a `conda` shell
 * function whose `activate ENV` prints a line; `activate` run as a program fails, as conda's does. `fail`: it makes DIR/bin and exits 1, as a
 * conda that lost its network half-way would.
 */
export function fakeConda(dir: string, o: { gate?: boolean; fail?: boolean } = {}): FakeConda {
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  const calls = join(dir, 'calls');
  const gate = join(dir, 'gate');
  // Written by the fake conda through an unquoted heredoc: only $version is the fake conda's.
  const env = fakeEnvPython('$version').replace(/\$(?!version)/g, () => '\\$');
  writeFileSync(
    join(bin, 'conda'),
    `#!/bin/sh
printf '%s\\n' "$*" >> '${calls}'
printf '%s\\n' "$HOME" >> '${calls}.home'
if [ "$1 $2" = "shell.bash hook" ]; then
  echo 'conda() { if [ "$1" = activate ]; then echo "fake conda: activated $2"; else command conda "$@"; fi; }'
  exit 0
fi
# As conda does, when its shell function was not set up.
[ "$1" = activate ] && { echo "CondaError: Run 'conda init' before 'conda activate'" >&2; exit 1; }
[ "$1" = create ] || { echo "fake conda: only create is faked" >&2; exit 2; }
prefix= version= prev=
for a in "$@"; do
  [ "$prev" = --prefix ] && prefix=$a
  case "$a" in python=*) version=\${a#python=} ;; esac
  prev=$a
done
${o.gate ? `while [ ! -e '${gate}' ]; do sleep 0.05; done` : ''}
mkdir -p "$prefix/bin"
${o.fail ? 'echo "CondaHTTPError: HTTP 000 CONNECTION FAILED (fake)" >&2; exit 1' : ''}
cat > "$prefix/bin/python" <<EOF
${env}EOF
chmod 755 "$prefix/bin/python"
echo "fake conda: created $prefix with Python $version"
`,
  );
  chmodSync(join(bin, 'conda'), 0o755);
  return {
    bin,
    calls: () => (existsSync(calls) ? readFileSync(calls, 'utf8').split('\n').filter((l) => l.length > 0) : []),
    homes: () => (existsSync(`${calls}.home`) ? readFileSync(`${calls}.home`, 'utf8').split('\n').filter((l) => l.length > 0) : []),
    open: () => writeFileSync(gate, ''),
  };
}
