#!/bin/bash
# Lead's orchestrator for the one shared GPU call. Usage (on the device): bash benchmarks/gpu/run_all.sh SECONDS
# Runs speed.sh alone first (GPU_SPEED_SECONDS, default 200), then every other
# benchmarks/gpu/<job>.sh in parallel on the one GPU, each under `timeout`, and tars their OUTDIRs into
# $OUT/gpu_out.tgz every 45 s (so a killed call still returns what finished).
set -u
T=${1:-480}
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
export POISONJAX_DATA=$PWD/.gpudata POISONJAX_CACHE=/tmp/pjcache
# the studies use JAX's default GPU matmul precision (TF32 on an H200, as PyTorch's cuDNN convolutions); speed.sh sets
# fp32 ("highest") itself for the side-by-side with ART
export PY=python3 POISONJAX_NO_FETCH=1
# 2026-11-30, first GPU call: with XLA's default autotuning, 15 processes compiling at once on the 16 host cores spent
# the whole call compiling (SimCLR's first step: 349 s; the GPU sat at 0-5 % SM) and the backdoor study aborted in
# XLA's Triton GEMM tiling (a check failure in jaxlib 0.11.2). Autotune level 0 was measured to work (speed.sh, second
# call); --xla_gpu_enable_triton_gemm=false (cuBLAS for every GEMM) is the usual way around the Triton abort.
export XLA_FLAGS=${XLA_FLAGS:---xla_gpu_autotune_level=0 --xla_gpu_enable_triton_gemm=false}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jaxcache}
mkdir -p /tmp/bin /tmp/gout
printf '#!/bin/sh\nexec python3 -c "import sys; from poisonjax.cli import main; sys.exit(main())" "$@"\n' > /tmp/bin/poisonjax
chmod +x /tmp/bin/poisonjax; export PATH=/tmp/bin:$PATH
G=/tmp/gout
{ date -u; nvidia-smi; lscpu | head -20; python3 -c "import jax, flax, optax, orbax.checkpoint as o; print(jax.__version__, flax.__version__, optax.__version__, jax.devices())"; } > $G/machine.txt 2>&1
(nvidia-smi dmon -s um -d 5 > $G/dmon.txt 2>&1 &)
# the speed side-by-side first, alone on the chip (GPU_SPEED_SECONDS, 0 skips it): its ratios mean nothing when shared
SP=${GPU_SPEED_SECONDS:-200}
if [ "$SP" -gt 0 ]; then
  mkdir -p $G/speed
  timeout -k 5 $SP bash benchmarks/gpu/speed.sh $G/speed $((SP - 5)) > $G/speed/stdout.log 2>&1
  echo "rc=$? at $(date -u +%T)" >> $G/speed/stdout.log
  T=$((T - SP))
fi
JOBS=${GPU_JOBS:-$(cd benchmarks/gpu && ls *.sh | grep -v -e run_all.sh -e speed.sh | sed 's/\.sh$//')}
NJ=$(echo $JOBS | wc -w)
FRAC=$(python3 -c "print(round(min(0.3, 0.9 / max(1, $NJ * ${GPU_PROCS_PER_JOB:-3})), 3))")
echo "jobs: $JOBS; mem fraction per process $FRAC" >> $G/machine.txt
for job in $JOBS; do
  mkdir -p $G/$job
  F=$FRAC; [ -f benchmarks/gpu/$job.frac ] && F=$(cat benchmarks/gpu/$job.frac)
  ( XLA_PYTHON_CLIENT_MEM_FRACTION=$F timeout -k 10 $T bash benchmarks/gpu/$job.sh $G/$job $((T - 20)) > $G/$job/stdout.log 2>&1
    echo "rc=$? at $(date -u +%T)" >> $G/$job/stdout.log ) &
done
( while true; do sleep 45; tar czf $OUT/gpu_out.tgz.tmp -C $G . 2>/dev/null && mv $OUT/gpu_out.tgz.tmp $OUT/gpu_out.tgz; done ) &
TAR=$!
wait_jobs() { for p in $(jobs -p); do [ "$p" = "$TAR" ] || wait $p; done; }
wait_jobs
kill $TAR 2>/dev/null
pkill -f "nvidia-smi dmon" 2>/dev/null
date -u >> $G/machine.txt
tar czf $OUT/gpu_out.tgz -C $G .
ls -la $OUT; for job in $JOBS; do echo "== $job"; tail -5 $G/$job/stdout.log; done
