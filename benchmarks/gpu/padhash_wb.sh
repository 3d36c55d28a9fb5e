#!/bin/bash
# Lead's GPU job: PADHASH and Witches' Brew paper variants on cifar10_jpeg_20k (issue 23).
# bash benchmarks/gpu/padhash_wb.sh OUTDIR SECONDS    (GPU_JOB_TINY=1: a CPU smoke test at a tiny size)
set -u
OUTDIR=$1; S=$2
mkdir -p $OUTDIR /tmp/wd
PJ="${PY:-python3} -c 'import sys; from poisonjax.cli import main; sys.exit(main())'"
TINY=""; TINY_WB=""
if [ "${GPU_JOB_TINY:-0}" = 1 ]; then
  TINY="--config.n_train=600 --config.n_test=200 --config.triggers=2 --config.n_victims=1 --config.craft_steps=3 --config.restarts=1 --config.train.epochs=1 --config.pretrain.epochs=1 --config.surrogate_checkpoints=[1] --config.queries=50"
  TINY_WB="--config.n_train=600 --config.n_test=200 --config.trials=2 --config.n_victims=1 --config.craft_steps=3 --config.restarts=1 --config.train.epochs=1 --config.surrogate_checkpoints=[1]"
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${PH_MEM_FRACTION:-0.07}
run() {  # name, then study args
  local name=$1; shift
  local tiny=$TINY; [ "$1" = witches_brew ] && tiny=$TINY_WB
  ( timeout -k 5 $((S - 10)) bash -c "$PJ run $* --workdir /tmp/wd/$name $tiny" > $OUTDIR/$name.log 2>&1; echo "rc=$? $(date -u +%T)" >> $OUTDIR/$name.log ) &
}
cd "$(dirname "$0")/../.."
export PYTHONPATH=${PYTHONPATH:-}:$PWD
date -u +%T > $OUTDIR/start.txt
want() { [ -z "${PH_CELLS:-}" ] || [[ " $PH_CELLS " == *" $1 "* ]]; }   # PH_CELLS="ph_csq32 wb_1pct": a subset
want ph_csq32 && run ph_csq32 padhash --variant paper
want ph_dpn32 && run ph_dpn32 padhash --variant paper --config.method=dpn --config.run_settings=False --config.run_transfer=False --config.run_budget_sweep=False
want ph_csq64 && run ph_csq64 padhash --variant paper --config.bits=64 --config.run_settings=False --config.run_transfer=False --config.run_budget_sweep=False
want ph_dpn64 && run ph_dpn64 padhash --variant paper --config.method=dpn --config.bits=64 --config.run_settings=False --config.run_transfer=False --config.run_budget_sweep=False
want wb_1pct && run wb_1pct witches_brew --variant paper --config.victim_chunk=8
want wb_05pct && run wb_05pct witches_brew --variant paper --config.budget=0.005 --config.victim_chunk=8
copy() { for d in /tmp/wd/*/; do n=$(basename $d); for f in results.json report.md; do [ -f $d/$f ] && cp $d/$f $OUTDIR/${n}_$f; done; done; }
while [ -n "$(jobs -rp)" ]; do sleep 20; copy; done
copy
for d in /tmp/wd/*/; do for p in $d/*.png; do [ -f "$p" ] && cp "$p" $OUTDIR/$(basename $d)_$(basename $p); done; done
date -u +%T >> $OUTDIR/start.txt
