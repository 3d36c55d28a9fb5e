#!/usr/bin/env bash
# DDSP paper-scale study on the GPU (issue 23, DDSP part). Contract: /work/notes/PREAMBLE3.md.
#   bash benchmarks/gpu/ddsp.sh OUTDIR SECONDS        (from the repo root; $PY = python, POISONJAX_DATA = data)
# Order (most important first): Beauty (clean + 9 methods, 5 seeds) at 1%, then 2%, 5%; then Video the same.
# Each study rewrites results.json after every finished ratio; this script copies it to OUTDIR/<dataset>/
# after each stage (also after a timeout), so partial results survive.
# Env: GPU_JOB_TINY=1 (CPU smoke test: 400 users, tiny model), DDSP_TARGETS (default 3: head / mid / cold),
#      DDSP_WORK (checkpoints; default /tmp/ddsp_gpu_work, never under OUTDIR), DDSP_DATASETS (default "beauty video").
set -u
OUT=${1:?OUTDIR}; SECS=${2:?SECONDS}
PY=${PY:-python3}
START=$(date +%s); END=$((START + SECS - 15))
WORK=${DDSP_WORK:-/tmp/ddsp_gpu_work}
mkdir -p "$OUT" "$WORK"
export JAX_COMPILATION_CACHE_DIR="$WORK/jaxcache"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
LOG="$OUT/log.txt"
echo "start $(date -u +%FT%TZ) secs=$SECS tiny=${GPU_JOB_TINY:-0} py=$PY" >> "$LOG"
$PY -c "import jax; print('jax', jax.__version__, jax.devices())" >> "$LOG" 2>&1
for DS in ${DDSP_DATASETS:-beauty video}; do
  NOW=$(date +%s); LEFT=$((END - NOW))
  if [ "$LEFT" -lt 30 ]; then echo "skip $DS: ${LEFT}s left" >> "$LOG"; continue; fi
  echo "== $DS: ${LEFT}s left $(date -u +%T)" >> "$LOG"
  timeout --signal=TERM --kill-after=5 "$LEFT" $PY - "$DS" "$WORK/$DS" >> "$LOG" 2>&1 <<'PYEOF'
import os, sys, time
from configs.ddsp import get_config
from experiments import ddsp as study
ds, wd = sys.argv[1], sys.argv[2]
c = get_config("paper")
c.dataset = ds
c.attack.num_targets = int(os.environ.get("DDSP_TARGETS", "3"))
c.train_group = 28                     # 1 clean + 9 methods x 3 targets: one group, one compiled program
c.train.victim_chunk = 35              # victims vmapped 35 at a time inside a step (memory bound)
# GPU-time cuts (see /work/notes/GPU_ddsp.md): histories truncated to the last DDSP_MAXLEN items (default 20:
# 4% of Beauty users are longer), patience 3 evaluations (15 epochs), at most 150 epochs
c.model.max_len = int(os.environ.get("DDSP_MAXLEN", "20"))
c.train.patience, c.train.epochs, c.train.checkpoint_every = 3, 150, 50
if os.environ.get("GPU_JOB_TINY") == "1":
    c.num_users, c.min_count = (400 if ds == "beauty" else 1200), 3
    c.model.max_len, c.model.hidden, c.model.num_blocks = 10, 16, 1
    c.train.epochs, c.train.eval_every, c.train.patience, c.train.checkpoint_every = 6, 2, 1, 2
    c.n_victims, c.train_group, c.train.victim_chunk = 2, 10, 8
    c.attack.num_targets = 3
t = time.time()
res = study.run(c, wd)
print(f"{ds}: done in {time.time() - t:.0f} s; ratios {res['meta']['ratios_done']}", flush=True)
PYEOF
  echo "$DS exit $? at $(date -u +%T), $(( $(date +%s) - START ))s since start" >> "$LOG"
  mkdir -p "$OUT/$DS"
  for f in results.json report.md promotion_vs_accuracy.png config.json; do
    [ -f "$WORK/$DS/$f" ] && cp "$WORK/$DS/$f" "$OUT/$DS/"
  done
done
echo "end $(date -u +%FT%TZ) total $(( $(date +%s) - START ))s" >> "$LOG"
