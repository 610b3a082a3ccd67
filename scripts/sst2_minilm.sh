#!/usr/bin/env bash
# Real fine-tuning runs for REPRODUCE.md: all-MiniLM-L6-v2 on GLUE SST-2, every method plus full and
# head, three seeds, one fixed short budget (1 epoch = 2,105 steps of batch 32, max length 128, dev
# accuracy every 500 steps and at the end).
#   bash scripts/sst2_minilm.sh MODEL_DIR SST2_DIR OUT_DIR [PARALLEL] [METHODS...]
# TRAIN=path/to/train.py runs another checkout's script with the same flags (the "before" rows).
set -uo pipefail
model=$1 data=$2 out=$3 parallel=${4:-8}
shift $(( $# < 4 ? $# : 4 ))
methods=${*:-full head $(python -c 'import spectral_ft; print(*spectral_ft.METHODS)')}
train=${TRAIN:-train.py}
mkdir -p "$out"
run() {  # method seed
  OMP_NUM_THREADS=1 python "$train" --method "$1" --model "$model" --task sst2 --data-dir "$data" \
    --epochs 1 --batch-size 32 --max-length 128 --eval-every 500 --seed "$2" --out "$out/$1-$2" \
    > "$out/$1-$2.log" 2>&1 || echo "FAILED $1 $2 (see $out/$1-$2.log)" >&2
}
for seed in 6 66 666; do
  for method in $methods; do
    while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n; done
    run "$method" "$seed" &
  done
done
wait
