#!/usr/bin/env bash
# Meta-PGD with lr / steps chosen without test labels (issue 23, Meta-PGD part). Contract: /work/notes/PREAMBLE3.md.
#   bash benchmarks/gpu/metapgd.sh OUTDIR SECONDS      (from the repo root; $PY = python, POISONJAX_DATA = data)
# Runs the metattack study (paper variant: greedy Meta-Self warm start, 1 flip per meta-gradient, 100 inner steps,
# 5 GCN victims, seed 15) with attack=meta_pgd, pgd.lr=auto over PGD_LRS and steps over PGD_STEPS, on 10 cells:
# Cora 5,10,15,20,25% then Citeseer 5..25%. PGD_WORKERS cells run at once (separate processes sharing the GPU:
# the dense meta-gradient loop is launch-bound, so one process leaves the GPU mostly idle); each takes the next
# cell of the queue (most important first). A finished cell's results.json / report.md are copied to
# OUTDIR/<dataset>_<rate>_{results.json,report.md}; log.txt has per-cell times.
# Env: GPU_JOB_TINY=1 (CPU smoke test: 2 cells, tiny settings), PGD_WORKERS (default 5), PGD_LRS (default
#      "1,2,4"), PGD_STEPS (default "40,80,160"), PGD_CELLS (default all 10, e.g. "cora:0.05 citeseer:0.2"),
#      PGD_WORK (checkpoints; default /tmp/metapgd_gpu_work, never under OUTDIR).
set -u
OUT=${1:?OUTDIR}; SECS=${2:?SECONDS}
PY=${PY:-python3}
START=$(date +%s); END=$((START + SECS - 10))
WORK=${PGD_WORK:-/tmp/metapgd_gpu_work}
mkdir -p "$OUT" "$WORK/queue"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/log.txt"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR="$WORK/jaxcache"
# ml_collections / jraph are pure Python; carried in benchmarks/gpu/pgd_pylib in case the GPU image lacks them
if ! $PY -c "import ml_collections, jraph" 2>/dev/null && [ -d benchmarks/gpu/pgd_pylib ]; then
  export PYTHONPATH="$PWD/benchmarks/gpu/pgd_pylib${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
W=${PGD_WORKERS:-5}
CELLS=${PGD_CELLS:-"cora:0.05 cora:0.1 cora:0.15 cora:0.2 cora:0.25 citeseer:0.05 citeseer:0.1 citeseer:0.15 citeseer:0.2 citeseer:0.25"}
if [ "${GPU_JOB_TINY:-0}" = "1" ]; then CELLS=${PGD_CELLS:-"cora:0.05 citeseer:0.05"}; W=${PGD_WORKERS:-2}; fi
# W processes share this job's GPU memory: no preallocation, each capped at its share of the job's fraction
FRAC=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.75}
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# floor 0.02 (~2.8 GB of an H200): a cell needs ~1-1.5 GB, and without preallocation a process takes only what it uses
export XLA_PYTHON_CLIENT_MEM_FRACTION=$($PY -c "print(max(0.02, round(float('$FRAC') / $W, 4)))")
echo "start $(date -u +%FT%TZ) secs=$SECS tiny=${GPU_JOB_TINY:-0} workers=$W mem_fraction_each=$XLA_PYTHON_CLIENT_MEM_FRACTION py=$PY" >> "$LOG"
echo "cells: $CELLS; lrs ${PGD_LRS:-1,2,4}; steps ${PGD_STEPS:-40,80,160}" >> "$LOG"
$PY -c "import jax; print('jax', jax.__version__, jax.devices())" >> "$LOG" 2>&1

run_cell() {  # $1 = dataset, $2 = rate
  local DS=$1 R=$2 LEFT
  LEFT=$((END - $(date +%s)))
  if [ "$LEFT" -lt 40 ]; then echo "skip $DS $R: ${LEFT}s left" >> "$LOG"; return; fi
  echo "== $DS $R start $(date -u +%T), ${LEFT}s left" >> "$LOG"
  local T0=$(date +%s)
  timeout --signal=TERM --kill-after=5 "$LEFT" $PY - "$DS" "$R" "$WORK/${DS}_${R}" > "$WORK/${DS}_${R}.log" 2>&1 <<'PYEOF'
import os, sys, time
from configs.metattack import get_config
from experiments import metattack as study
ds, rate, wd = sys.argv[1], float(sys.argv[2]), sys.argv[3]
c = get_config("paper")                     # seed 15, 1 flip / meta-gradient, 100 inner steps, 5 victims
c.dataset, c.rate, c.attack, c.progress = ds, rate, "meta_pgd", False
c.chunk_size = 20                           # fewer host round-trips and checkpoint writes than 5
c.pgd.lr = "auto"
c.pgd.lr_grid = tuple(float(v) for v in os.environ.get("PGD_LRS", "1,2,4").split(","))
c.pgd.steps_grid = tuple(int(v) for v in os.environ.get("PGD_STEPS", "40,80,160").split(","))
if os.environ.get("GPU_JOB_TINY") == "1":
    c.rate, c.flips_per_step, c.inner_steps, c.n_victims = 0.002, 5, 5, 1
    c.gcn.epochs = 20
    c.pgd.steps_grid, c.pgd.lr_grid = (2, 3), (1.0, 4.0)
    c.pgd.samples, c.pgd.select_seeds = 2, 1
t = time.time()
r = study.run(c, wd)
m = r["meta_pgd"]
print(f"{ds} {rate}: done in {time.time() - t:.0f} s (greedy {m['greedy_seconds']:.0f} s, pgd+tuning "
      f"{m['pgd_seconds']:.0f} s, selection {m['selection_seconds']:.0f} s); lr {m['lr']} steps {m['steps']}; "
      f"acc poisoned {r['test_acc_poisoned']['mean']:.3f}", flush=True)
PYEOF
  local RC=$?
  grep -v -i "warn" "$WORK/${DS}_${R}.log" | tail -3 >> "$LOG"
  echo "$DS $R exit $RC at $(date -u +%T), $(( $(date +%s) - T0 ))s" >> "$LOG"
  for f in results.json report.md; do
    [ -f "$WORK/${DS}_${R}/$f" ] && cp "$WORK/${DS}_${R}/$f" "$OUT/${DS}_${R}_$f"
  done
  if [ "$RC" -ne 0 ]; then tail -20 "$WORK/${DS}_${R}.log" > "$OUT/${DS}_${R}_error.txt"; fi
}

worker() {  # takes the next unclaimed cell (mkdir is atomic) until the queue is empty
  for CELL in $CELLS; do
    mkdir "$WORK/queue/$CELL" 2>/dev/null || continue
    run_cell "${CELL%%:*}" "${CELL##*:}"
  done
}

rm -rf "$WORK/queue"; mkdir -p "$WORK/queue"
for i in $(seq 1 "$W"); do worker & sleep 2; done
wait
echo "end $(date -u +%FT%TZ) total $(( $(date +%s) - START ))s" >> "$LOG"
