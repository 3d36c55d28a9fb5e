"""Victims trained to convergence (issue 23, DDSP): early stopping on the validation item, through
``core.runner`` so a killed study resumes mid-cell (issue 14 item 4)."""
import json
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.data.sequences import leave_one_out
from poisonjax.data.synthetic import interaction_logs
from poisonjax.recsys import metrics as M
from poisonjax.recsys.models import make_model
from poisonjax.recsys.training import early_stopping_trainer, train_early_stopping, validation_ndcg

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny():
    seqs = interaction_logs(120, 30, mean_length=7, seed=1)
    sp = leave_one_out(seqs, 6)
    return sp, make_model("sasrec", 30, 6, hidden=8, num_blocks=1, dropout=0.1)


def test_validation_ndcg_matches_the_full_ranking_metric(tiny):
    sp, m = tiny
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    P = jax.vmap(lambda k: m.init(k, jnp.ones((1, 6), jnp.int32), True))(keys)
    got = np.asarray(validation_ndcg(m, chunk=64, victim_chunk=2)(P, (sp.valid_x, sp.valid_y, sp.valid_x)))
    r = np.asarray(M.make_ensemble_ranker(m, 64)(P, sp.valid_x, sp.valid_y, sp.valid_x))
    want = [M.hit_ndcg(rk, (10,))["ndcg@10"] for rk in r]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_early_stopping_keeps_the_best_model_and_resumes_bit_equal(tiny, tmp_path):
    sp, m = tiny
    make = early_stopping_trainer(m, 30, max_epochs=12, batch_size=32, lr=1e-2, eval_every=2, patience=2)
    xs, ys = jnp.asarray(sp.train_x)[None].repeat(2, 0), jnp.asarray(sp.train_y)[None].repeat(2, 0)
    ws = jnp.ones(xs.shape[:2]).at[1, :20].set(0.0)           # dataset 1: 20 rows masked out
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    val = (sp.valid_x, sp.valid_y, sp.valid_x)
    P, info = train_early_stopping(make, xs, ys, ws, keys, val)
    vf = validation_ndcg(m, 32)
    flat = jax.tree.map(lambda a: a.reshape((4,) + a.shape[2:]), P)
    # the returned models are the best evaluated ones: their validation NDCG is the recorded best
    np.testing.assert_allclose(np.asarray(vf(flat, val)), np.ravel(info["best_val"]), rtol=1e-6)
    assert all(0 < e <= info["epochs"] and e % 2 == 0 for e in np.ravel(info["best_epoch"]))
    # interrupted after 4 epochs (checkpoint at 4), then resumed: bit-equal to the uninterrupted run
    wd = tmp_path / "es"
    make4 = early_stopping_trainer(m, 30, max_epochs=12, batch_size=32, lr=1e-2, eval_every=2, patience=2)
    from poisonjax.core import runner
    es = make4(6)
    rep = lambda a: jnp.repeat(a, 2, axis=0)
    prob = {"train": es.vt.problem({"x": rep(xs), "y": rep(ys)}, jnp.tile(keys, (2, 1)), rep(ws)),
            "val": tuple(jnp.asarray(a) for a in val)}
    runner.run(es.as_attack_optimizer(), prob, 4, wd, chunk_size=2, checkpoint_every=2, progress=False)
    P2, info2 = train_early_stopping(make4, xs, ys, ws, keys, val, workdir=wd, checkpoint_every=2)
    assert info2["resumed_from"] == 4 and info2["best_epoch"] == info["best_epoch"]
    for a, b in zip(jax.tree.leaves(P), jax.tree.leaves(P2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from configs.ddsp import get_config
    from experiments import ddsp as study
    c = get_config("paper")
    c.dataset = "synthetic"
    c.synthetic.num_users, c.synthetic.num_items = 160, 40
    c.min_count = 1
    c.model.max_len, c.model.hidden, c.model.num_blocks = 6, 8, 1
    c.train.epochs, c.train.eval_every, c.train.patience, c.train.checkpoint_every = 8, 2, 2, 2
    c.train.batch_size, c.train.learning_rate = 64, 1e-2
    c.n_victims, c.train_group = 2, 2
    c.attack.num_targets, c.attack.methods = 2, ("random", "ddsp")
    c.attack.extra_ratios = ()
    c.attack.fake_ratio = 0.05
    study.run(c, sys.argv[1])
""")

TIMINGS = ("seconds", "train_seconds", "gen_seconds", "resumed_from")


@pytest.mark.slow
def test_ddsp_study_resumes_mid_cell_after_a_kill(tmp_path):
    """Kill (SIGKILL) the paper-path study once a victim group has a runner checkpoint, rerun it: its
    results equal an uninterrupted run's in every value but wall times, and the rerun restored the
    checkpoint (a group resumed from an epoch > 0, not from scratch)."""
    from tests._multiproc import kill_when_checkpointed, spawn, strip_volatile, wait_ok
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    wd, ref = tmp_path / "killed", tmp_path / "ref"
    p = spawn(script, wd, ROOT)
    kill_when_checkpointed(p, wd / "checkpoints" / "ratio0.05_g0" / "checkpoints", min_step=2, timeout=900)
    assert not (wd / "results.json").exists(), "the study finished before it could be killed"
    r, q = spawn(script, ref, ROOT), spawn(script, wd, ROOT)
    wait_ok(q, 1800)
    wait_ok(r, 1800)
    a, b = (json.loads((d / "results.json").read_text()) for d in (ref, wd))
    assert any(b["meta"]["early_stopping"]["resumed_from"]), "no victim group resumed from a checkpoint"
    assert not any(a["meta"]["early_stopping"]["resumed_from"])
    assert strip_volatile(a, TIMINGS) == strip_volatile(b, TIMINGS)          # same program: bit-equal
