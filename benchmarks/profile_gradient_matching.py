"""Where the time of one gradient-matching (Witches' Brew) crafting step goes, op by op (issue 23).

Builds the step that ``gradient_matching_vs_art.py --dataset cifar10_20k`` times (T targets vmapped,
P poisons each, one surrogate ``FastSmallCNN``; random weights and images: the step's cost does not
depend on their values), compiles it, runs it ``--repeats`` times under ``jax.profiler`` and prints
the mean wall time per step, XLA's cost analysis (FLOPs and bytes accessed) and the ops that took the
most time (the trace's complete events aggregated by name: ``stack.*`` are the im2col concatenations,
``copy_*`` layout transposes, ``ynn_fusion*`` the GEMMs). ``--hlo FILE`` writes the optimized HLO, to
look an op name up.

Run::

    python benchmarks/profile_gradient_matching.py                  # CIFAR-sized, 8 targets x 100 poisons
    python benchmarks/profile_gradient_matching.py --size 8 --channels 1 --poisons 75   # digits-sized
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine  # noqa: E402

MACHINE = _machine.start()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from poisonjax.core import gradient_matching as gm  # noqa: E402
from poisonjax.vision import witches_brew as wb  # noqa: E402
from poisonjax.vision.models import FastSmallCNN  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=8, help="trials vmapped in one step (T)")
    ap.add_argument("--poisons", type=int, default=100, help="poisons per target (P)")
    ap.add_argument("--size", type=int, default=32, help="image height = width")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="profiled steps (after one warm-up)")
    ap.add_argument("--top", type=int, default=25, help="ops to list")
    ap.add_argument("--hlo", default=None, help="write the optimized HLO text here")
    args = ap.parse_args()
    for name in ("targets", "poisons", "size", "channels", "repeats", "top"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be a positive integer, got {getattr(args, name)}")

    model = FastSmallCNN(10)
    key = jax.random.PRNGKey(0)
    shape = (args.size, args.size, args.channels)
    params = jax.vmap(lambda k: model.init(k, jnp.zeros((1,) + shape)))(jax.random.split(key, 1))
    t, p = args.targets, args.poisons
    problem = gm.GradientMatchingProblem(params, jax.random.uniform(key, (t, p) + shape),
                                         jax.random.randint(key, (t, p), 0, 10), jax.random.uniform(key, (t, 1) + shape),
                                         jnp.ones((t, 1), jnp.int32), jnp.float32(16 / 255))
    attack = gm.batch_over_trials(gm.gradient_matching_attack(wb.cross_entropy(model.apply), steps=100))
    state = jax.jit(attack.init)(key, problem)
    step = jax.jit(attack.step)
    compiled = step.lower(state, problem).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    if args.hlo:
        Path(args.hlo).write_text(compiled.as_text())
    jax.block_until_ready(step(state, problem))
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        jax.block_until_ready(step(state, problem))
    wall = (time.perf_counter() - t0) / args.repeats
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        for _ in range(args.repeats):
            jax.block_until_ready(step(state, problem))
        jax.profiler.stop_trace()
        files = sorted(glob.glob(f"{d}/plugins/profile/*/*.trace.json.gz"))
        events = json.load(gzip.open(files[-1]))["traceEvents"] if files else []
    total = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(("ThunkExecutor", "$", "SlinkyThreadPool")):
            total[e["name"]] += e["dur"] / 1e3 / args.repeats
    flops, nbytes = cost.get("flops", float("nan")), cost.get("bytes accessed", float("nan"))
    print(f"step: {t} targets x {p} poisons of {shape}: {1e3 * wall:.1f} ms "
          f"({flops / 1e9:.2f} GFLOP -> {flops / wall / 1e9:.1f} GFLOP/s; {nbytes / 1e9:.2f} GB accessed)")
    groups = collections.Counter()
    for name, ms in total.items():
        groups["im2col stacks" if name.startswith("stack") else "layout copies" if name.startswith("copy")
               else "GEMMs (ynn)" if name.startswith(("ynn", "dot")) else "other fusions"] += ms
    print("by kind (ms per step): " + ", ".join(f"{k} {v:.1f}" for k, v in groups.most_common()))
    for name, ms in total.most_common(args.top):
        print(f"{ms:8.1f} ms  {name}")
    print(json.dumps({"targets": t, "poisons": p, "shape": shape, "step_ms": 1e3 * wall, "gflop": flops / 1e9,
                      "gb_accessed": nbytes / 1e9, "by_kind_ms": dict(groups),
                      "top_ops_ms": dict(total.most_common(args.top)), "machine": MACHINE.finish()}, indent=1))


if __name__ == "__main__":
    main()
