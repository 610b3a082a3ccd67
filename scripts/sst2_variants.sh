#!/usr/bin/env bash
# The papers' ablations on the same real runs as sst2_minilm.sh: all-MiniLM-L6-v2 on GLUE SST-2, three seeds,
# one epoch of 2,105 steps of 32, max length 128, dev accuracy every 500 steps and at the end.
#   bash scripts/sst2_variants.sh MODEL_DIR SST2_DIR OUT_DIR [PARALLEL] [VARIANTS...]
# A variant is a method with flags (docs/claims.md says which claim each checks); its runs go to
# OUT_DIR/<variant>-<seed>. The plain methods' runs (loca, spectral_a at their defaults) are sst2_minilm.sh's.
#   loca-v1              LoCA Table 5 V1: coefficients only, at random locations (T_s = 0)
#   loca-v2              V2: alternating for the whole run (T_s past the run's end: capped at its length)
#   loca-v3              V3: coefficients and locations jointly every step for the first T_s steps
#   loca-v4, loca-v5     V4 / V5: forward / backward one-sided difference as the location gradient
#   spectral_a-bottom    Spectral Adapter A tuning the bottom singular vectors (App. F.3: top beats bottom)
set -uo pipefail
model=$1 data=$2 out=$3 parallel=${4:-8}
shift $(( $# < 4 ? $# : 4 ))
declare -A flags=(
  [loca-v1]="--method loca --T-s 0" [loca-v2]="--method loca --T-s 1000000" [loca-v3]="--method loca --mode joint"
  [loca-v4]="--method loca --difference forward" [loca-v5]="--method loca --difference backward"
  [spectral_a-bottom]="--method spectral_a --columns bottom")
variants=${*:-loca-v1 loca-v2 loca-v3 loca-v4 loca-v5 spectral_a-bottom}
for variant in $variants; do
  [ -n "${flags[$variant]:-}" ] || { echo "sst2_variants.sh: unknown variant $variant (known: ${!flags[*]})" >&2; exit 2; }
done
mkdir -p "$out"
run() {  # variant seed
  # shellcheck disable=SC2086  # the variant's flags are words
  OMP_NUM_THREADS=1 python train.py ${flags[$1]} --model "$model" --task sst2 --data-dir "$data" \
    --epochs 1 --batch-size 32 --max-length 128 --eval-every 500 --seed "$2" --out "$out/$1-$2" \
    > "$out/$1-$2.log" 2>&1 || echo "FAILED $1 $2 (see $out/$1-$2.log)" >&2
}
for seed in 6 66 666; do
  for variant in $variants; do
    while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n; done
    run "$variant" "$seed" &
  done
done
wait
