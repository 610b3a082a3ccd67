#!/usr/bin/env bash
# The README's test command under CPU kernel sets other than this machine's default (REPRODUCE §11):
# torch's vector extensions (ATEN_CPU_CAPABILITY) and OpenBLAS's kernels (OPENBLAS_CORETYPE, numpy's).
#   bash scripts/kernel_sets.sh ["CAPABILITY:CORETYPE" ...]     (default: the three below)
# One line per set: the pytest summary and the wall time. The golden runs' spread over all 15 sets:
#   python tests/test_golden.py --spread
set -uo pipefail
cd "$(dirname "$0")/.."
command="$(grep -m1 -E '^python -m pytest' README.md)"
sets=${*:-"machine:SkylakeX avx2:Zen default:Prescott"}
for set in $sets; do
  capability=${set%%:*} coretype=${set##*:}
  env=(OPENBLAS_CORETYPE="$coretype")
  [ "$capability" = machine ] || env+=(ATEN_CPU_CAPABILITY="$capability")
  start=$(date +%s)
  summary=$(env "${env[@]}" CI=true $command 2>&1 | tail -1)
  echo "ATEN_CPU_CAPABILITY=$capability OPENBLAS_CORETYPE=$coretype: $summary ($(( $(date +%s) - start )) s)"
done
