#!/usr/bin/env bash
# The leaderboard's GPU work, as one prepared script for one GPU:
#   0. BREAST-ULS (genuine BUSI, 112 px) ipc 2 at the `paper` budget for the rows behind the paper's claim
#      (PTM, DATM, FTD, MTT, random, real), seed 0: its records are their own budget (`paper`), never pooled
#      with the CPU's `quick` ones; at 112 px a cell takes long, so the stage records what finishes in BUSI_S
#      and a rerun (or a longer slot) goes on from there;
#   1. PTM, MTT and FTD on RetinaMNIST ipc 2 at the `medium` budget (10 % of the official iterations,
#      20 experts x 50 epochs, 5 x 500-epoch evaluations), seed 0; PTM and FTD share one flat (GSAM) buffer,
#      MTT reads an SGD one, as every budget does (two buffers to build);
#   2. the real-3D table: every method plus random and real on AdrenalMNIST3D ipc 1 at `quick`, seeds 0-2
#      (a method that cannot run on 3D refuses and the sweep goes on with the others);
#   3. the leaderboards of OUT (records.jsonl beside them: merge it into the project's store to publish).
# Each stage is cut at its time limit; what finished is recorded, and a rerun skips it.
#   scripts/gpu_leaderboard.sh [DATA_ROOT] [OUT]
# Method lists: METHODS_BUSI, METHODS_RETINA, METHODS3D (defaults above).
# Limits in seconds and the device: BUSI_S (240), RETINA_S (180), ADRENAL_S (120), DEVICE (cuda); each cut may take 15 s
# more to stop, so the defaults leave about a minute of a 10-minute slot for start-up and the tables. For a plumbing check
# on a CPU: DEVICE=cpu BUDGET2D=smoke BUDGET3D=smoke METHODS3D="random dm" SEEDS3D=0 scripts/gpu_leaderboard.sh
set -uo pipefail
root=${1:-${MDDBENCH_DATA:-$HOME/.mddbench/data}}
out=${2:-mddbench_gpu}
device=${DEVICE:-cuda}
methods3d=${METHODS3D:-random real dc dsa dm cafe mtt smdd haba ftd datm seqmatch ptm}
common=(--data-root "$root" --out "$out" --device "$device" --jobs 1 --quiet)
status=0

stage() {  # stage NAME SECONDS ARGS...: one sweep under a time limit; a cut or a failed cell is reported, not fatal
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout --signal=INT --kill-after=15 "$limit" mddbench sweep "$@" "${common[@]}"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start)) s (124: cut at ${limit} s; 137: killed 15 s after the cut)"
  [ "$rc" -eq 0 ] || status=1
}

# shellcheck disable=SC2086  # the method list splits on purpose
stage "breast-uls ipc 2, ${BUDGET_BUSI:-paper}" "${BUSI_S:-240}" --methods ${METHODS_BUSI:-ptm datm ftd mtt random real} \
  --datasets breast-uls --ipc 2 --seeds 0 --budget "${BUDGET_BUSI:-paper}"
# shellcheck disable=SC2086  # the method list splits on purpose
stage "retinamnist ipc 2, ${BUDGET2D:-medium}" "${RETINA_S:-180}" --methods ${METHODS_RETINA:-ptm mtt ftd} --datasets retinamnist \
  --ipc 2 --seeds 0 --budget "${BUDGET2D:-medium}"
# shellcheck disable=SC2086  # the method list splits on purpose
stage "adrenalmnist3d ipc 1, ${BUDGET3D:-quick}" "${ADRENAL_S:-120}" --methods $methods3d --datasets adrenalmnist3d \
  --ipc 1 --seeds ${SEEDS3D:-0 1 2} --budget "${BUDGET3D:-quick}"
mddbench leaderboard --results "$out" --to "$out/leaderboards" || status=1
exit $status
