#!/usr/bin/env bash
# The PTM evidence of leaderboards/README.md (quick budget, CPU): for each dataset and ipc (default BreastMNIST and
# PneumoniaMNIST at ipc 2 and 10),
#  1. PTM, then MTT (on the same flat experts) and FTD, each given PTM's measured distillation time;
#  2. the ablations: the module off; overlap on but retraining off; retraining alone; Figure 1b's random-segment baseline
#     with back-end probability 0 and 1;
#  3. accuracy against time: PTM and FTD (six times that PTM run's own distillation time, measured minutes before
#     on the same machine) with snapshots, evaluated by `mddbench curve`, and the figure analogues by `mddbench plot`.
# Records go to $OUT/results.sqlite (variants get their own leaderboard rows); curves and figures to $CURVES.
# Time nothing else while this runs: the time-matched comparison is only fair on an otherwise idle machine.
# PARTS picks what runs (default "match ablate curves"); finished runs are skipped, killed ones resume.
# POINTS is the number of snapshots each curve evaluates (default 12; each costs one 3-network evaluation).
# SEEDS (default 0) are the seeds of PTM, of the time-matched runs (each given its own seed's PTM time) and of
# the ablations; the curves use the first seed only.
# BUDGET (default quick) is the budget of every run (smoke: a plumbing check on the generated `demo` set);
# SNAPSHOT_EVERY (default 10) the iterations between the curves' snapshots, CURVE_EPOCHS (default 300) the epochs of
# each of the 3 networks that evaluate a snapshot.
#   [DATASETS="breastmnist"] [IPCS="2"] [PARTS="match ablate"] [POINTS=8] [SEEDS="0 1 2"] [BUDGET=quick] \
#     scripts/ptm_evidence.sh [DATA_ROOT] [OUT] [CURVES]
set -euo pipefail
root=${1:-../shared/data}
out=${2:-mddbench_out}
curves=${3:-ptm_curves}
parts=${PARTS:-match ablate curves}
# every run, the curves' included, uses one expert cache (a second CPU build of PneumoniaMNIST's GSAM
# experts takes ~40 min, and would give other experts than the runs it is compared with)
budget=${BUDGET:-quick}
common=(--budget "$budget" --data-root "$root" --quiet --expert-cache "${MDDBENCH_EXPERTS:-$out/experts}")

distill_seconds() {  # distill_seconds of the default-hyperparameter ptm record of store $1 for dataset $2, ipc $3, seed $4
  python - "$1/results.sqlite" "$2" "$3" "$4" "$budget" <<'EOF'
import sys
from mddbench.budgets import get_budget, record_budget_version
from mddbench.results import ResultStore
version = get_budget(sys.argv[5]).version  # an older definition of a budget ran other iterations, so other times
seed = int(sys.argv[4])
recs = [r for r in ResultStore(sys.argv[1]).records(method="ptm", dataset=sys.argv[2], budget=sys.argv[5])
        if r["ipc"] == int(sys.argv[3]) and r["seed"] == seed and not r.get("overrides") and not r.get("time_budget")
        and record_budget_version(r) == version]
if not recs:
    sys.exit(f"no default PTM record of {sys.argv[5]} version {version} for {sys.argv[2]} ipc {sys.argv[3]} seed {seed}")
print(round(sum(r["distill_seconds"] for r in recs) / len(recs), 1))
EOF
}

seeds=(${SEEDS:-0})
for dataset in ${DATASETS:-breastmnist pneumoniamnist}; do
  for ipc in ${IPCS:-2 10}; do
    for seed in "${seeds[@]}"; do
      [[ " $parts " == *" match "* || " $parts " == *" ablate "* ]] || continue  # the curves run a PTM of their own
      mddbench run --method ptm --dataset "$dataset" --ipc "$ipc" --seed "$seed" --out "$out" "${common[@]}"
      if [[ " $parts " == *" match "* ]]; then
        t=$(distill_seconds "$out" "$dataset" "$ipc" "$seed")
        echo "== $dataset ipc $ipc seed $seed: PTM distilled in $t s; MTT and FTD get the same time"
        mddbench run --method mtt --dataset "$dataset" --ipc "$ipc" --seed "$seed" --out "$out" "${common[@]}" \
          --hp experts=flat --hp iterations=100000 --time-budget "$t"
        # FTD's quick EMA decay (0.9995^(5000/100)) fixed, since the iteration count is open-ended here
        mddbench run --method ftd --dataset "$dataset" --ipc "$ipc" --seed "$seed" --out "$out" "${common[@]}" \
          --hp iterations=100000 --hp ema_decay=0.975 --time-budget "$t"
      fi
      if [[ " $parts " == *" ablate "* ]]; then
        for ablation in "overlap=false" "retrain=false" "overlap_loss=false" "schedule=random backend_p=0.0" \
                        "schedule=random backend_p=1.0"; do
          hp=()
          for kv in $ablation; do hp+=(--hp "$kv"); done
          mddbench run --method ptm --dataset "$dataset" --ipc "$ipc" --seed "$seed" --out "$out" "${common[@]}" \
            "${hp[@]}"
        done
      fi
    done
    [[ " $parts " == *" curves "* ]] || continue
    # accuracy against time (Figure 3a), the first seed: separate runs that keep snapshots; FTD's budget is six
    # times the time of this PTM run, not of a record that may have come from another machine
    mddbench run --method ptm --dataset "$dataset" --ipc "$ipc" --seed "${seeds[0]}" --out "$curves" "${common[@]}" \
      --snapshot-every "${SNAPSHOT_EVERY:-10}"
    t=$(distill_seconds "$curves" "$dataset" "$ipc" "${seeds[0]}")
    long=$(python -c "print(6 * $t)")
    mddbench run --method ftd --dataset "$dataset" --ipc "$ipc" --seed "${seeds[0]}" --out "$curves" "${common[@]}" \
      --hp iterations=100000 --hp ema_decay=0.975 --time-budget "$long" --snapshot-every "${SNAPSHOT_EVERY:-10}"
    for run in "$curves"/runs/ptm_"$dataset"_ipc"$ipc"_* "$curves"/runs/ftd_"$dataset"_ipc"$ipc"_*; do
      # a curve resumes by itself: points already in curve.json at these settings are not evaluated again
      mddbench curve "$run" --data-root "$root" --eval-n-models 3 --eval-epochs "${CURVE_EPOCHS:-300}" --points "${POINTS:-12}" --quiet
    done
    shopt -s nullglob  # the default PTM runs of `match`/`ablate`, where they ran, join the stage figures
    mddbench plot "$curves"/runs/ptm_"$dataset"_ipc"$ipc"_* "$curves"/runs/ftd_"$dataset"_ipc"$ipc"_* \
      "$out"/runs/ptm_"$dataset"_ipc"$ipc"_* --to "$curves/figures_${dataset}_ipc${ipc}"
    shopt -u nullglob
  done
done
