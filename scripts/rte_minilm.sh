#!/usr/bin/env bash
# Real fine-tuning runs for REPRODUCE.md: all-MiniLM-L6-v2 on GLUE RTE, every method plus
# full and head, three seeds, one fixed budget (10 epochs, batch 32, max length 128).
#   bash scripts/rte_minilm.sh MODEL_DIR RTE_DIR OUT_DIR [PARALLEL]
set -uo pipefail
model=$1 data=$2 out=$3 parallel=${4:-6}
mkdir -p "$out"
run() {  # method seed [extra flags]
  local method=$1 seed=$2; shift 2
  OMP_NUM_THREADS=2 python train.py --method "$method" --model "$model" --task rte --data-dir "$data" \
    --epochs 10 --batch-size 32 --max-length 128 --seed "$seed" --out "$out/$method-$seed" "$@" \
    > "$out/$method-$seed.log" 2>&1 || echo "FAILED $method $seed (see $out/$method-$seed.log)" >&2
}
for seed in 6 66 666; do
  for method in full head lora vera fourierft fora dfora loca foura spectral_a spectral_r; do
    while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n; done
    if [ "$method" = loca ]; then run "$method" "$seed" --T-s 78 &  # 10% of the 780 steps
    else run "$method" "$seed" & fi
  done
done
wait
