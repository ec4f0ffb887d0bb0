#!/usr/bin/env bash
# Offline checks of the agent's machine image (npm run ami:check); exits non-zero if any fails:
#   1. packer validate of ami/ (full validation: amazon-ebs is built into Packer 1.6 and validating
#      does not call AWS; the file provisioners need the agent bundle, so it is built first)
#   2. systemd-analyze verify of ami/dstack-agent.service and ami/dstack-job-imds-block.service
#   3. shellcheck of ami/*.sh, scripts/*.sh and .ci/run
set -euo pipefail
cd "$(dirname "$0")/.."

failed=()
check() {
  local name="$1"
  shift
  printf '== %s\n' "$name"
  if "$@"; then
    printf 'ok: %s\n' "$name"
  else
    printf 'FAILED: %s\n' "$name"
    failed+=("$name")
  fi
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

packer_validate() {
  npm run --silent build:agent >/dev/null
  packer validate -var "version=$(cat dist/agent-bundle/VERSION)" ami/
}

# systemd-analyze verify fails on an ExecStart= or ExecStopPost= program that does not exist, and
# /usr/bin/node and /opt/dstack/agent/ exist only on the image. So verify a copy of the unit whose
# absolute paths point into a temp root that holds what the image would: this machine's node and
# the real idle-shutdown.sh and job-imds-block.sh. Everything else in the units is verified as written.
unit_verify() {
  local root="$tmp/root" copy="$tmp/unit/dstack-agent.service" block="$tmp/unit/dstack-job-imds-block.service"
  mkdir -p "$root/usr/bin" "$root/opt/dstack/agent" "$tmp/unit"
  ln -s "$(command -v node)" "$root/usr/bin/node"
  install -m 0755 ami/idle-shutdown.sh "$root/opt/dstack/agent/idle-shutdown.sh"
  install -m 0755 ami/job-imds-block.sh "$root/opt/dstack/agent/job-imds-block.sh"
  sed -e "/^Exec/ s#/usr/bin/node #$root/usr/bin/node #" -e "/^Exec/ s#/opt/dstack/agent/#$root/opt/dstack/agent/#g" \
    ami/dstack-agent.service >"$copy"
  sed -e "/^Exec/ s#/opt/dstack/agent/#$root/opt/dstack/agent/#g" ami/dstack-job-imds-block.service >"$block"
  grep -q "^ExecStart=$root/opt/dstack/agent/job-imds-block.sh dstack-job\$" "$block" || {
    echo "dstack-job-imds-block.service: ExecStart is not /opt/dstack/agent/job-imds-block.sh dstack-job"
    return 1
  }
  # The rewrite must have hit both commands, or the unit changed and this check needs updating.
  grep -q "^ExecStart=$root/usr/bin/node $root/opt/dstack/agent/dstack-agent.mjs\$" "$copy" || {
    echo "ExecStart is not /usr/bin/node /opt/dstack/agent/dstack-agent.mjs"
    return 1
  }
  grep -q "^ExecStopPost=$root/opt/dstack/agent/idle-shutdown.sh\$" "$copy" || {
    echo "ExecStopPost is not /opt/dstack/agent/idle-shutdown.sh"
    return 1
  }
  # verify prints its findings but may still exit 0 on some of them: any output is a failure.
  local out
  out="$(systemd-analyze verify "$copy" "$block" 2>&1)" || {
    printf '%s\n' "$out"
    return 1
  }
  [[ -z "$out" ]] || {
    printf '%s\n' "$out"
    return 1
  }
}

shell_scripts() {
  shellcheck --external-sources --source-path=SCRIPTDIR ami/*.sh scripts/*.sh .ci/run
}

check "packer validate ami/" packer_validate
check "systemd-analyze verify ami/*.service" unit_verify
check "shellcheck ami/*.sh scripts/*.sh .ci/run" shell_scripts

if ((${#failed[@]} > 0)); then
  printf 'ami:check: %d check(s) failed: %s\n' "${#failed[@]}" "${failed[*]}"
  exit 1
fi
echo "ami:check: all checks passed"
