import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A `docker` for a test's PATH, in front of the real one: there is no NVIDIA runtime here, so a
 * container created with `--gpus` could never start. For each `docker create` with `--gpus`, it creates
 * the container as asked (never started), appends its `HostConfig.DeviceRequests` as the daemon
 * recorded them to `log` (one JSON line), removes it, and creates it again without the request.
 * Every other command goes to the real docker unchanged.
 */
export function dockerWithoutGpus(dir: string, realDocker: string, log: string): string {
  const file = join(dir, 'docker');
  writeFileSync(
    file,
    `#!/usr/bin/env bash
real=${JSON.stringify(realDocker)}
if [ "$1" != create ]; then exec "$real" "$@"; fi
stripped=()
name=
gpus=
while [ $# -gt 0 ]; do
  case "$1" in
    --gpus) gpus=$2; shift 2; continue ;;
    --name) name=$2 ;;
  esac
  stripped+=("$1")
  shift
done
if [ -n "$gpus" ]; then
  # stripped[0] is "create": the request goes in right after it, as the agent placed it.
  "$real" create --gpus "$gpus" "\${stripped[@]:1}" >/dev/null || exit $?
  "$real" inspect --format '{{json .HostConfig.DeviceRequests}}' "$name" >> ${JSON.stringify(log)}
  "$real" rm -f "$name" >/dev/null
fi
exec "$real" "\${stripped[@]}"
`,
  );
  chmodSync(file, 0o755);
  return file;
}
