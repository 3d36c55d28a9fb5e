#!/bin/bash
# GPU side-by-side speed (issue 23): Witches' Brew crafting, poisonjax (one vmapped program over the targets,
# compilation included) vs ART's GradientMatchingAttack with its PyTorchClassifier on CUDA, same surrogate
# weights, same budget / epsilon / steps, fp32 on both sides. Run it ALONE on the GPU (run_all.sh runs it before the
# other jobs, for GPU_SPEED_SECONDS; 0 skips it), so neither side shares the chip. ART needs about 30 s per
# benchmark at 4 targets on an H200 (7.2 s per target), ours about 8 s: give it SECONDS >= 200.
#   bash benchmarks/gpu/speed.sh OUTDIR SECONDS        (ART comes as a wheel in .whl/; ART_PYTHON=python3)
set -u
OUTDIR=$1; S=$2
mkdir -p $OUTDIR
export ART_PYTHON=${ART_PYTHON:-python3} ART_DEVICE=${ART_DEVICE:-gpu}
export JAX_DEFAULT_MATMUL_PRECISION=${JAX_DEFAULT_MATMUL_PRECISION:-highest}   # fp32, as torch's default (no TF32)
export XLA_FLAGS=${XLA_FLAGS:---xla_gpu_autotune_level=0}
T=${SPEED_TARGETS:-4}
H=$(( S / 2 ))
{ nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv; } > $OUTDIR/gpu.txt 2>&1
timeout -k 5 $H python3 benchmarks/gradient_matching_vs_art.py --targets $T --steps 100 --eps 16 --budget 0.05 \
  --victims 0 --ensemble-m 0 --modes vmap > $OUTDIR/wb_digits.txt 2>&1; echo "rc=$?" >> $OUTDIR/wb_digits.txt
timeout -k 5 $(( S - H - 5 )) python3 benchmarks/gradient_matching_vs_art.py --dataset cifar10_20k --targets $T \
  --steps 100 --eps 16 --budget 0.01 --victims 0 --ensemble-m 0 --modes vmap > $OUTDIR/wb_cifar.txt 2>&1
echo "rc=$?" >> $OUTDIR/wb_cifar.txt
