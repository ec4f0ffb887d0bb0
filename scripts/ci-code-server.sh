#!/usr/bin/env bash
# CI's code-server (.ci/run): installed with install-code-server.sh once a day into CACHE_ROOT/YYYY-MM-DD/
# code-server-VERSION, a cache that outlives the run where the machine keeps it; older days are removed.
# When CACHE_ROOT can't be written, a temp dir. Prints the code-server path.
#   usage: ci-code-server.sh CACHE_ROOT   (CODE_SERVER_VERSION, default 4.99.4)
set -euo pipefail
cache_root=${1:?usage: ci-code-server.sh CACHE_ROOT}
version=${CODE_SERVER_VERSION:-4.99.4}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if mkdir -p "$cache_root" 2>/dev/null && [ -w "$cache_root" ]; then
  today="$cache_root/$(date +%F)"
  for day in "$cache_root"/[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]; do
    if [ -d "$day" ] && [ "$day" != "$today" ]; then rm -rf "$day"; fi
  done
  prefix="$today/code-server-$version"
else
  prefix="$(mktemp -d)/code-server-$version"
fi
CODE_SERVER_VERSION=$version bash "$here/install-code-server.sh" "$prefix"
