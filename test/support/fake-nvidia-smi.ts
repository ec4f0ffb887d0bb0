import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface FakeGpus {
  /** How many cards; 2 by default. */
  gpus?: number;
  /** Their name; `NVIDIA A10G` (a g5 instance's) by default. */
  name?: string;
  /** Their memory; 23028 MiB (an A10G's) by default. */
  memoryMiB?: number;
}

/**
 * Writes an executable `nvidia-smi` into `dir` (made if needed; put it first on PATH) that answers as
 * the driver does on an instance with these cards, in the formats of NVIDIA's driver 535 on a g5
 * instance: `--query-gpu=<fields> --format=csv[,noheader][,nounits]` (fields index, name,
 * memory.total, uuid), `-L`, and the plain table. An unknown field or option fails as the real one
 * does (exit 2). Returns `dir`.
 */
export function fakeNvidiaSmi(dir: string, o: FakeGpus = {}): string {
  const n = o.gpus ?? 2;
  const name = o.name ?? 'NVIDIA A10G';
  const mib = o.memoryMiB ?? 23028;
  const indices = Array.from({ length: n }, (_, i) => i);
  const uuid = (i: number): string => `GPU-6d1f3c2a-41b8-${(0x7a10 + i).toString(16)}-9c5e-0b3d5f${String(i).padStart(6, '0')}`;
  const table = [
    'Wed Nov 25 23:20:01 2026       ',
    '+---------------------------------------------------------------------------------------+',
    '| NVIDIA-SMI 535.104.05             Driver Version: 535.104.05   CUDA Version: 12.2     |',
    '|-----------------------------------------+----------------------+----------------------+',
    '| GPU  Name                 Persistence-M | Bus-Id        Disp.A | Volatile Uncorr. ECC |',
    '| Fan  Temp   Perf          Pwr:Usage/Cap |         Memory-Usage | GPU-Util  Compute M. |',
    '|                                         |                      |               MIG M. |',
    '|=========================================+======================+======================|',
    ...indices.flatMap((i) => [
      `| ${String(i).padStart(3)}  ${name.padEnd(24)}       On  | 00000000:00:${(0x1b + i).toString(16).toUpperCase().padStart(2, '0')}.0 Off |                    0 |`,
      `|  0%   22C    P8              15W / 300W |      0MiB / ${`${mib}MiB`.padStart(8)} |      0%      Default |`,
      '|                                         |                      |                  N/A |',
      '+-----------------------------------------+----------------------+----------------------+',
    ]),
    '                                                                                         ',
    '+---------------------------------------------------------------------------------------+',
    '| Processes:                                                                            |',
    '|  GPU   GI   CI        PID   Type   Process name                            GPU Memory |',
    '|        ID   ID                                                             Usage      |',
    '|=======================================================================================|',
    '|  No running processes found                                                           |',
    '+---------------------------------------------------------------------------------------+',
  ];
  // One `i|name|memory|uuid` line per card, read by the script's query branch.
  const rows = indices.map((i) => `${i}|${name}|${mib}|${uuid(i)}`).join('\n');
  const script = `#!/bin/sh
# A stand-in for nvidia-smi with ${n} × ${name} (${mib} MiB), written by test/support/fake-nvidia-smi.ts.
query= format=
for a in "$@"; do
  case "$a" in
    --query-gpu=*) query="\${a#--query-gpu=}" ;;
    --format=*) format="\${a#--format=}" ;;
    -L|--list-gpus)
${indices.map((i) => `      echo 'GPU ${i}: ${name} (UUID: ${uuid(i)})'`).join('\n') || '      :'}
      exit 0 ;;
    *) echo "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help." >&2; exit 2 ;;
  esac
done
if [ -z "$query" ]; then
  cat <<'TABLE'
${table.join('\n')}
TABLE
  exit 0
fi
case ",$format," in *,csv,*) ;; *) echo "--query-gpu requires --format" >&2; exit 2 ;; esac
header=yes units=yes
case ",$format," in *,noheader,*) header=no ;; esac
case ",$format," in *,nounits,*) units=no ;; esac
IFS=,
line=
for f in $query; do
  case "$f" in
    index) h='index' ;;
    name) h='name' ;;
    memory.total) h='memory.total [MiB]' ;;
    uuid) h='uuid' ;;
    *) echo "Field \\"$f\\" is not a valid field to query." >&2; exit 2 ;;
  esac
  line="\${line:+$line, }$h"
done
[ $header = yes ] && echo "$line"
while IFS='|' read -r i n m u; do
  [ -n "$i" ] || continue
  line=
  IFS=,
  for f in $query; do
    case "$f" in
      index) v=$i ;;
      name) v=$n ;;
      memory.total) if [ $units = yes ]; then v="$m MiB"; else v=$m; fi ;;
      uuid) v=$u ;;
    esac
    line="\${line:+$line, }$v"
  done
  echo "$line"
done <<'ROWS'
${rows}
ROWS
`;
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'nvidia-smi');
  writeFileSync(path, script);
  chmodSync(path, 0o755);
  return dir;
}
