"""DDSP scaling benchmark (not a test).

Reports, on Amazon Beauty (``$POISONJAX_DATA``):

1. DDSP generation time vs number of fake users (100 .. 10,000): the jit-compiled ``lax.scan`` over
   positions, vmapped over fake users, with the SASRec surrogate (compile time listed separately).
2. Surrogate / victim training time per epoch (SASRec and GRU4Rec, one seed).
3. Speed-up of vmapped K-seed victim training over K sequential runs.
4. Side by side with PyTorch (no authors' code is public): a clearly labelled *straightforward
   PyTorch implementation of the same re-ranking generator* (a Python loop over positions, batched
   over fake users with torch ops), against poisonjax's ``core.autoregressive.generate``, both with
   the same simplified scorer (dot product of the last item's embedding with all items plus a
   fixed utility vector, so the two need no shared model code). Runs in its own venv
   ``benchmarks/.venvs/torch`` (``python -m venv benchmarks/.venvs/torch &&
   benchmarks/.venvs/torch/bin/pip install torch==2.13.0 numpy``); skipped if it is missing.

Usage: ``python benchmarks/ddsp_scaling.py [--fake 100 1000 10000] [--k 4] [--epochs 1]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine  # noqa: E402  (CPU model and load average in every output)

MACHINE = _machine.start()

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poisonjax.core import autoregressive  # noqa: E402
from poisonjax.data.sequences import leave_one_out, load_sequences  # noqa: E402
from poisonjax.recsys import attacks as A  # noqa: E402
from poisonjax.recsys.models import make_model  # noqa: E402
from poisonjax.recsys.training import make_trainer  # noqa: E402

TORCH_PY = ROOT / "benchmarks" / ".venvs" / "torch" / "bin" / "python"

TORCH_WORKER = r'''
import sys, time, json, numpy as np, torch
torch.manual_seed(0)
torch.set_num_threads(int(sys.argv[2]))
d = np.load(sys.argv[1])
E = torch.from_numpy(d["E"]); util = torch.from_numpy(d["util"])
S, T, C, target, cap, gmax = (int(x) for x in d["meta"])
V = E.shape[0]

def generate():
    tokens = torch.zeros((S, T), dtype=torch.long)
    counts = torch.zeros(V, dtype=torch.long)
    pos = torch.arange(T)
    for t in range(T):                                   # positions
        prev = tokens[:, t - 1] if t > 0 else torch.zeros(S, dtype=torch.long)
        z = E[prev] @ E.T + util                         # [S, V] scores
        z[:, 0] = -1e9
        z[:, target] += 100.0
        z = z + torch.distributions.Gumbel(0.0, 1.0).sample(z.shape)
        zc, cand = torch.topk(z, C, dim=1)               # [S, C]
        in_prefix = (tokens[:, None, :] == cand[:, :, None]) & (pos[None, None, :] < t)
        n_in = in_prefix.sum(2)
        last = torch.where(in_prefix, pos[None, None, :], torch.full_like(pos, -10**6)[None, None, :]).amax(2)
        is_t = cand == target
        n_glob = torch.where(is_t, torch.zeros_like(cand), counts[cand])
        cap_c = torch.where(is_t, torch.full_like(cand, cap), torch.ones_like(cand))
        gap_c = torch.where(is_t, torch.full_like(cand, 2), torch.ones_like(cand))
        hard = (n_in >= cap_c) | ((t - last) < gap_c)     # per-sequence constraints outrank the shared cap
        soft = n_glob >= gmax
        rr = zc - 1.0 * n_in - 0.5 * torch.log1p(n_glob.float())
        rr = torch.where(hard, rr - 2e9, torch.where(soft, rr - 1e9, rr))
        chosen = cand.gather(1, rr.argmax(1, keepdim=True))[:, 0]
        tokens[:, t] = chosen
        counts.index_add_(0, chosen, torch.ones_like(chosen))
    return tokens

generate()                                               # warm-up
t0 = time.perf_counter(); tok = generate(); dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "torch": torch.__version__, "target_share": float((tok == target).float().mean())}))
'''


def timed(fn, *a):
    t0 = time.perf_counter()
    out = fn(*a)
    jax.block_until_ready(out)
    return out, time.perf_counter() - t0


def simple_generator(E, util, S, T, C, target, cap, gmax, key):
    """The same simplified generator as TORCH_WORKER, via core.autoregressive.generate."""
    V = E.shape[0]
    is_t = jnp.arange(V) == target

    def score(prefix, t, k, aux):
        prev = jnp.where(t > 0, prefix[jnp.maximum(t - 1, 0)], 0)
        z = E @ E[prev] + util
        return jnp.where(is_t, z + 100.0, z)

    return autoregressive.generate(score, S, T, V, key, num_candidates=C, temperature=1.0, within_penalty=1.0,
                                   global_penalty=0.5, token_caps=jnp.ones((V,), jnp.int32).at[target].set(cap),
                                   min_gap=jnp.ones((V,), jnp.int32).at[target].set(2), max_global=gmax,
                                   banned=jnp.zeros((V,), bool).at[0].set(True), global_exempt=is_t).tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fake", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--kseed-users", type=int, default=3000, help="Beauty subset for the K-seed speed-up")
    ap.add_argument("--torch-threads", type=int, default=2)
    ap.add_argument("--out", default="")
    ap.add_argument("--parts", nargs="+", default=["train", "generate", "kseed", "torch"],
                    help="which parts to run (train is needed by generate and torch)")
    args = ap.parse_args()
    out = {"jax": jax.__version__, "devices": str(jax.devices())}

    ds = load_sequences("beauty", min_count=5)
    L = 50
    sp = leave_one_out(ds.sequences, L)
    x, y = jnp.asarray(sp.train_x), jnp.asarray(sp.train_y)
    T = int(round(float(ds.lengths().mean())))
    print(f"Beauty: {ds.num_users} users, {ds.num_items} items; fake length {T}")

    # 2. training time per epoch (one seed), SASRec and GRU4Rec
    params = {}
    need_train = bool({"train", "generate", "torch"} & set(args.parts))
    for name in (("sasrec", "gru4rec") if need_train else ()):
        m = make_model(name, ds.num_items, L, hidden=64, num_blocks=2, dropout=0.2)
        tr = make_trainer(m, ds.num_items, epochs=args.epochs, batch_size=256, lr=1e-3)
        p, t_first = timed(tr.train_single, x, y, jax.random.PRNGKey(0))
        p, t_run = timed(tr.train_single, x, y, jax.random.PRNGKey(1))
        out[f"{name}_epoch_seconds"] = t_run / args.epochs
        out[f"{name}_compile_plus_first_seconds"] = t_first
        params[name] = (m, p)
        print(f"{name}: {t_run / args.epochs:.2f} s/epoch (first call incl. compile {t_first:.1f} s)")

    # 1. DDSP generation time vs number of fake users (SASRec surrogate)
    target = int(A.select_targets(ds.popularity(), 3)[1])
    out["generation"] = {}
    if "generate" in args.parts:
        m, p = params["sasrec"]
        sur = A.build_surrogate(m, p, sp.valid_x, sp.valid_x, 10)
    for S in (args.fake if "generate" in args.parts else ()):
        _, t_c = timed(A.surrogate_generate, sur, target, S, T, jax.random.PRNGKey(0))
        _, t_r = timed(A.surrogate_generate, sur, target, S, T, jax.random.PRNGKey(1))
        out["generation"][S] = {"seconds": t_r, "first_call_seconds": t_c}
        print(f"DDSP generation, {S:6d} fake users x {T} items: {t_r:.2f} s (first call incl. compile {t_c:.1f} s)")

    # 3. K-seed speed-up: one vmapped call vs K sequential calls (Beauty subset)
    if "kseed" in args.parts:
        sub = load_sequences("beauty", num_users=args.kseed_users, min_count=3, seed=0)
        ssp = leave_one_out(sub.sequences, 20)
        sx, sy = jnp.asarray(ssp.train_x), jnp.asarray(ssp.train_y)
        m = make_model("sasrec", sub.num_items, 20, hidden=32, num_blocks=1, dropout=0.2)
        tr = make_trainer(m, sub.num_items, epochs=args.epochs, batch_size=128, lr=2e-3)
        keys = jax.random.split(jax.random.PRNGKey(0), args.k)
        timed(tr.train, sx, sy, keys)
        timed(tr.train_single, sx, sy, keys[0])
        _, t_v = timed(tr.train, sx, sy, keys)
        t_s = 0.0
        for k in range(args.k):
            _, dt = timed(tr.train_single, sx, sy, keys[k])
            t_s += dt
        out["kseed"] = {"K": args.k, "users": sub.num_users, "vmapped_seconds": t_v, "sequential_seconds": t_s,
                        "speedup": t_s / t_v}
        print(f"K={args.k} victims ({sub.num_users} users, {args.epochs} epoch): vmapped {t_v:.2f} s, "
              f"sequential {t_s:.2f} s, speed-up {MACHINE.ratio(t_s, t_v, '{:.2f}x')}")

    # 4. PyTorch side by side: the same simplified generator
    E = np.asarray(params["sasrec"][1]["params"]["item_emb"]["embedding"], np.float32)
    rng = np.random.default_rng(0)
    util = rng.normal(size=E.shape[0]).astype(np.float32)
    C, cap = 64, max(1, int(np.ceil(0.25 * T)))
    out["torch_compare"] = {}
    for S in (args.fake if "torch" in args.parts else ()):
        gmax = max(2, int(np.ceil(0.1 * S)))
        gen = jax.jit(lambda k, S=S, gmax=gmax: simple_generator(jnp.asarray(E), jnp.asarray(util), S, T, C, target,
                                                                 cap, gmax, k))
        timed(gen, jax.random.PRNGKey(0))
        _, t_j = timed(gen, jax.random.PRNGKey(1))
        row = {"poisonjax_seconds": t_j}
        if TORCH_PY.exists():
            f = Path(os.environ.get("TMPDIR", "/tmp")) / f"ddsp_bench_{S}.npz"
            np.savez(f, E=E, util=util, meta=np.array([S, T, C, target, cap, gmax]))
            r = subprocess.run([str(TORCH_PY), "-c", TORCH_WORKER, str(f), str(args.torch_threads)],
                               capture_output=True, text=True, timeout=3600)
            if r.returncode == 0:
                tj = json.loads(r.stdout.strip().splitlines()[-1])
                row.update(torch_seconds=tj["seconds"], torch=tj["torch"], ratio_torch_over_jax=tj["seconds"] / t_j)
            else:
                row["torch_error"] = r.stderr[-500:]
        else:
            row["torch_error"] = f"{TORCH_PY} missing (see module doc)"
        out["torch_compare"][S] = row
        print(f"simplified generator, {S:6d} fake users: poisonjax {t_j:.3f} s" +
              (f", straightforward PyTorch {row['torch_seconds']:.3f} s, ratio {MACHINE.ratio(row['torch_seconds'], t_j, '{:.2f}x')}"
               if "torch_seconds" in row else f" ({row.get('torch_error', '')[:200]})"))
    out["machine"] = MACHINE.finish()
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
