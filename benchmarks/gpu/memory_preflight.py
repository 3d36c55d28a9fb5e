"""Memory of the paper-size Witches' Brew crafting step before spending device time on it (fifteenth session).

Compiles (on this CPU, without running) one crafting step of ``batch_over_trials(gradient_matching_attack(...))``
at the ``paper`` variant's sizes (T trials x R restarts x M surrogates x P poisons of 32x32x3 through the small
ResNet, flip + crop augmentation) and prints XLA's ``memory_analysis()`` for each ``trial_chunk``. The CPU
compiler's temporaries overestimate a GPU's (on the H200 the all-trials step asked for 172 GiB where this prints
262 GiB) but scale the same way, so the ratio between chunks is what to read.

    python benchmarks/gpu/memory_preflight.py --chunks 0,1,2          # 0 = all trials in one vmap
"""
import argparse
import time

import jax
import jax.numpy as jnp

from poisonjax.core import gradient_matching as gm
from poisonjax.vision import witches_brew as wb
from poisonjax.vision.models import make_classifier


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--restarts", type=int, default=8)
    ap.add_argument("--surrogates", type=int, default=8, help="M = ensemble x checkpoints")
    ap.add_argument("--poisons", type=int, default=100)
    ap.add_argument("--model", default="small_resnet")
    ap.add_argument("--chunks", default="0,1,2", help="trial_chunk values (0 = all trials at once)")
    a = ap.parse_args()
    for name in ("trials", "restarts", "surrogates", "poisons"):
        if getattr(a, name) < 1:
            ap.error(f"--{name} must be a positive integer, got {getattr(a, name)}")
    try:
        chunks = [int(v) for v in a.chunks.split(",")]
    except ValueError:
        ap.error(f"--chunks must be comma-separated integers, got {a.chunks!r}")
    T, P = a.trials, a.poisons
    model = make_classifier(a.model, 10)
    params = jax.vmap(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3))))(jax.random.split(jax.random.PRNGKey(0), a.surrogates))
    prob = gm.GradientMatchingProblem(params, jnp.zeros((T, P, 32, 32, 3)), jnp.zeros((T, P), jnp.int32),
                                      jnp.zeros((T, 1, 32, 32, 3)), jnp.zeros((T, 1), jnp.int32), jnp.float32(16 / 255))
    for c in chunks:
        att = gm.batch_over_trials(gm.gradient_matching_attack(wb.cross_entropy(model.apply), steps=250,
                                                               restarts=a.restarts, flip=True, crop=2), c or None)
        st = jax.eval_shape(att.init, jax.random.PRNGKey(0), prob)
        t = time.time()
        m = jax.jit(att.step).lower(st, prob).compile().memory_analysis()
        print(f"trial_chunk={c or 'all'}: temporaries {m.temp_size_in_bytes / 2 ** 30:.2f} GiB, arguments "
              f"{m.argument_size_in_bytes / 2 ** 30:.2f} GiB (compiled in {time.time() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
