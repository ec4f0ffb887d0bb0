#!/usr/bin/env bash
# Builds the dstack agent's machine image (ami/) in your AWS account and prints its id.
#   scripts/build-ami.sh [packer build options, e.g. -var instance_type=c6i.2xlarge]
# Region, subnet and profile come from dstack's config ($DSTACK_HOME/config.yaml, default
# ~/.dstack/config.yaml: aws.region, aws.subnet, aws.profile); DSTACK_AWS_REGION,
# DSTACK_AWS_EC2_SUBNET and DSTACK_AWS_PROFILE override them, as they do for dstack itself.
# It builds the agent bundle first (npm run build:agent) and names the image after its version.
# Packer's progress goes to stderr and to dist/ami-build/packer-<time>.log; stdout gets only the
# new image id. PACKER names the packer binary (default: packer).
set -euo pipefail
cd "$(dirname "$0")/.."

config="${DSTACK_HOME:-$HOME/.dstack}/config.yaml"

# config_value KEY...: the value at that path in config.yaml, or nothing (no file, no key).
config_value() {
  [[ -f "$config" ]] || return 0
  node -e '
    const { parse } = require("yaml");
    const [file, ...path] = process.argv.slice(1);
    let v = parse(require("node:fs").readFileSync(file, "utf8")) ?? {};
    for (const k of path) v = v && typeof v === "object" ? v[k] : undefined;
    if (v !== undefined && v !== null) process.stdout.write(String(v));
  ' "$config" "$@"
}

region="${DSTACK_AWS_REGION:-$(config_value aws region)}"
region="${region:-us-east-1}"
subnet="${DSTACK_AWS_EC2_SUBNET:-$(config_value aws subnet)}"
profile="${DSTACK_AWS_PROFILE:-$(config_value aws profile)}"
if [[ -n "$profile" ]]; then
  export AWS_PROFILE="$profile"
fi

npm run --silent build:agent >&2
version="$(tr -d '[:space:]' <dist/agent-bundle/VERSION)"
# AMI names allow letters, digits, spaces and ( ) [ ] . / - ' @ _
[[ "$version" =~ ^[0-9A-Za-z._-]+$ ]] || {
  echo "build-ami: version '$version' cannot be part of an AMI name" >&2
  exit 1
}

mkdir -p dist/ami-build
log="dist/ami-build/packer-$(date -u +%Y%m%dT%H%M%SZ).log"
echo "build-ami: agent $version in $region, subnet ${subnet:-(default VPC)}; log $log" >&2

# Machine-readable lines are `time,target,type,data...` with commas in data written as
# %!(PACKER_COMMA); show the `ui` ones to the person waiting.
"${PACKER:-packer}" build -machine-readable -color=false \
  -var "region=$region" -var "subnet_id=$subnet" -var "version=$version" "$@" ami/ |
  tee "$log" |
  awk -F, '$3 == "ui" { m = $5; for (i = 6; i <= NF; i++) m = m "," $i; gsub(/%!\(PACKER_COMMA\)/, ",", m); gsub(/\\n/, "\n", m); print m }' >&2

# The artifact id is `region:ami-...`, one per region the image was copied to.
ids="$(awk -F, '$3 == "artifact" && $5 == "id" { print $6 }' "$log" | sed 's/%!(PACKER_COMMA)/\n/g')"
ami="$(printf '%s\n' "$ids" | awk -F: -v r="$region" '$1 == r { print $2 }' | tail -n1)"
if [[ -z "$ami" ]]; then
  echo "build-ami: packer reported no image for $region; see $log" >&2
  exit 1
fi
echo "build-ami: built $ami (dstack:agent-version=$version) in $region" >&2
echo "$ami"
