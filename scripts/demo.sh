#!/usr/bin/env bash
# The quick start: set up .venv, build the emoji data (with npm, on first use), train
# configs/demo.yaml, and test the best checkpoint on the held-out test pairs.
# Extra arguments go to `fit` (e.g. --trainer.max_epochs 3 --model.scheduler.init_args.total_steps 3:
# the one-cycle schedule steps once an epoch); DEMO_RUN sets the run folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Busy-waiting OpenMP threads slow a shared 2-core machine 2-3x.
export OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg
run=${DEMO_RUN:-"runs/demo-$(date +%Y%m%d-%H%M%S)"}
start=$(date +%s)
.venv/bin/lightning-siamese fit -c configs/demo.yaml --trainer.default_root_dir "$run" "$@"
best=$(ls "$run"/checkpoints/epoch*-recall1-*.ckpt | head -n 1)
.venv/bin/lightning-siamese test -c configs/demo.yaml --trainer.default_root_dir "$run" --ckpt_path "$best"
echo "demo: fit + test in $(( $(date +%s) - start )) s; run folder $run, best checkpoint $best"
