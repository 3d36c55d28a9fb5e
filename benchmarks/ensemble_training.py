"""Benchmark: train K digits SmallCNN victims with one vmapped program vs a Python loop of K runs.

    python benchmarks/ensemble_training.py [--ks 1 4 16] [--epochs 10] [--repeats 2]

Prints, for each K, wall seconds (after compilation) for the vmapped ensemble and for K sequential
single-victim runs of the same jitted function, the time per victim, and the ratio.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import optax

from poisonjax.core.training import init_and_train, softmax_cross_entropy_loss, train_ensemble
from poisonjax.data.images import load_digits
from poisonjax.vision.models import FastSmallCNN, SmallCNN
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine  # noqa: E402  (CPU model and load average in every output)

MACHINE = _machine.start()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["fast", "flax"],
                    help="fast = FastSmallCNN (PatchConv: patches @ kernel), flax = SmallCNN (nn.Conv)")
    a = ap.parse_args()
    ds = load_digits()
    data = {"x": jnp.asarray(ds.x_train), "y": jnp.asarray(ds.y_train)}
    for name in a.models:
        bench(name, FastSmallCNN() if name == "fast" else SmallCNN(), data, a, ds)


def bench(name, m, data, a, ds):
    init = lambda k: m.init(k, data["x"][:1])
    loss = softmax_cross_entropy_loss(m.apply)
    opt = optax.adam(3e-3)
    single = jax.jit(lambda k: init_and_train(init, loss, opt, data, k, epochs=a.epochs, batch_size=a.batch_size).params)
    ens = jax.jit(lambda ks: train_ensemble(init, loss, opt, data, ks, epochs=a.epochs, batch_size=a.batch_size).params)

    def best(f):
        ts = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            jax.block_until_ready(f())
            ts.append(time.perf_counter() - t)
        return min(ts)

    print(f"[{name}] jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s); "
          f"digits train {len(ds.y_train)} images, {a.epochs} epochs, batch {a.batch_size}")
    print(f"{'K':>4} {'vmap_s':>9} {'loop_s':>9} {'vmap_s/victim':>14} {'loop_s/victim':>14} {'ratio':>7}")
    for k in a.ks:
        keys = jax.random.split(jax.random.PRNGKey(0), k)
        jax.block_until_ready(ens(keys))          # compile
        jax.block_until_ready(single(keys[0]))    # compile
        tv = best(lambda: ens(keys))
        tl = best(lambda: [single(keys[i]) for i in range(k)])
        print(f"{k:>4} {tv:>9.3f} {tl:>9.3f} {tv / k:>14.4f} {tl / k:>14.4f} {MACHINE.ratio(tl, tv, '{:>6.2f}x')}",
              flush=True)


if __name__ == "__main__":
    main()
