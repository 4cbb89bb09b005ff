#!/usr/bin/env bash
# The `paper` budget (10 models x 1000 epochs, 100 experts x 50 epochs, official iterations) for one
# dataset on one GPU: every method plus random and real at ipc 1, 2 and 10, records into --out.
# Restartable: rerun the same command after an interruption; finished cells are skipped.
#   scripts/gpu_paper.sh pathmnist [DATA_ROOT] [OUT]
set -euo pipefail
dataset=${1:?usage: gpu_paper.sh DATASET [DATA_ROOT] [OUT]}
root=${2:-${MDDBENCH_DATA:-$HOME/.mddbench/data}}
out=${3:-mddbench_paper}
methods="random real dc dsa dm cafe mtt smdd haba ftd datm seqmatch ptm"
mddbench sweep --methods $methods --datasets "$dataset" --ipc 1 2 10 --seeds 0 \
  --budget paper --device cuda --data-root "$root" --out "$out" --jobs 1
mddbench sweep --methods $methods --datasets "$dataset" --ipc 2 --seeds 0 \
  --budget paper --device cuda --data-root "$root" --out "$out" --jobs 1 \
  --eval-model convnet --eval-model lenet --eval-model resnet18 --eval-model alexnet
mddbench leaderboard --results "$out" --to "$out/leaderboards"
