"""Child process for the kill/resume test: a stochastic optimisation driven by core.runner.run.

Usage: python _runner_child.py WORKDIR OUT.npz [sleep_per_step]
"""
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.runner import run
from poisonjax.core.types import AttackOptimizer


class S(NamedTuple):
    w: jax.Array
    m: jax.Array
    key: jax.Array


def init(key, prob):
    k1, k2 = jax.random.split(key)
    return S(jax.random.normal(k1, (32, 32)) * 0.1, jnp.zeros((32, 32)), k2)


SLEEP = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0


def step(s, prob):
    k, sub = jax.random.split(s.key)
    x = jax.random.normal(sub, (16, 32))
    g = jax.grad(lambda w: jnp.mean((jnp.tanh(x @ w) - x @ prob["A"]) ** 2))(s.w)
    m = 0.9 * s.m + g
    if SLEEP:
        jax.debug.callback(lambda: time.sleep(SLEEP))
    return S(s.w - 0.05 * m, m, k)


attack = AttackOptimizer(init, step, lambda s, p: {"norm": jnp.linalg.norm(s.w)})
problem = {"A": jnp.eye(32) * 0.5}
res = run(attack, problem, 120, sys.argv[1], chunk_size=4, checkpoint_every=8, config={"child": 1}, progress=False)
np.savez(sys.argv[2], w=np.asarray(res.state.w), m=np.asarray(res.state.m), key=np.asarray(res.state.key),
         resumed=-1 if res.resumed_from is None else res.resumed_from, n=len(res.metrics))
