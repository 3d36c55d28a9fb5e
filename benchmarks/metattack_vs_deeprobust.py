"""Metattack speed: poisonjax vs DeepRobust on the same graph, split and budget, on this machine.

    python benchmarks/metattack_vs_deeprobust.py --dataset cora --perturbations 3
    python benchmarks/metattack_vs_deeprobust.py --dataset cora --grad-check   # fidelity only

``--grad-check`` computes one exact Meta-Self meta-gradient on both sides from the *same* initial
weights and self-training labels (ours drawn, then injected into DeepRobust's ``Metattack``) and
reports the attack losses, the largest absolute difference of the ``[N, N]`` gradients and whether
the best flips agree. ``--state PATH`` does the same at an attacked state (the flips of a perturbed
adjacency, e.g. Pro-GNN's ``cora_meta_adj_0.2.npz``) and counts edge removals among each side's
50 best-scored pairs:

    python benchmarks/metattack_vs_deeprobust.py --dataset cora --grad-check \
        --state $POISONJAX_DATA/prognn_perturbed_graphs/meta/cora_meta_adj_0.2.npz

DeepRobust runs in its own venv (``benchmarks/.venvs/deeprobust``; created by ``--setup`` following
shared/PEERS.md: torch 2.13.0 CPU, ``pip install --no-deps deeprobust`` plus its runtime deps, and the
missing ``import warnings`` patched into its ``__init__`` files). Both sides attack the Nettack LCC
with the Pro-GNN split, Meta-Self (lambda=0), 100 inner steps (SGD lr 0.1, momentum 0.9) and one flip
per meta-gradient, with the log-likelihood constraint *off* on both sides: DeepRobust 0.2.11's
``likelihood_ratio_filter`` indexes a dense tensor with a NumPy pair array, which under torch 2.13
tries to allocate 61 GB and fails (our LL filter adds about 0.2 s per step when on). Timing excludes the surrogate training
and (for JAX) compilation; it reports seconds per perturbation, the ratio, the k-flips variant, and
how the exact step compares with the FLOP bound (a same-size float32 GEMM timed in this process).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine  # noqa: E402  (CPU model and load average in every output)

MACHINE = _machine.start()

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "benchmarks" / ".venvs" / "deeprobust"

DR_SCRIPT = r'''
import json, sys, time, warnings
import numpy as np, scipy.sparse as sp, torch
warnings.filterwarnings("ignore")
torch.set_num_threads(int(sys.argv[4]))
from deeprobust.graph.defense import GCN
from deeprobust.graph.global_attack import Metattack
data_root, name, n_pert = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = np.load(f"{data_root}/nettack_npz_cora_citeseer_polblogs/{name}.npz", allow_pickle=False)
adj = sp.csr_matrix((d["adj_data"], d["adj_indices"], d["adj_indptr"]), shape=tuple(d["adj_shape"]))
adj = adj + adj.T; adj[adj > 1] = 1; adj = adj.tolil(); adj.setdiag(0); adj = adj.tocsr(); adj.eliminate_zeros()
_, comp = sp.csgraph.connected_components(adj)
keep = np.where(comp == np.argmax(np.bincount(comp)))[0]
adj = adj[keep][:, keep]
feat = sp.csr_matrix((d["attr_data"], d["attr_indices"], d["attr_indptr"]), shape=tuple(d["attr_shape"]))[keep]
labels = d["labels"][keep]
s = json.load(open(f"{data_root}/prognn_perturbed_graphs/splits/{name}_prognn_splits.json"))
idx_train, idx_val, idx_test = (np.array(s[k]) for k in ("idx_train", "idx_val", "idx_test"))
idx_unlabeled = np.union1d(idx_val, idx_test)
sur = GCN(nfeat=feat.shape[1], nclass=labels.max() + 1, nhid=16, dropout=0, with_relu=False, with_bias=False, device="cpu")
sur.fit(feat, adj, labels, idx_train, idx_val, patience=30)
model = Metattack(sur, nnodes=adj.shape[0], feature_shape=feat.shape, attack_structure=True, attack_features=False,
                  device="cpu", lambda_=0, train_iters=100, lr=0.1, momentum=0.9)
# DeepRobust's examples pass dense tensors (utils.preprocess(..., preprocess_adj=False))
adj_t, feat_t, labels_t = torch.FloatTensor(adj.todense()), torch.FloatTensor(feat.todense()), torch.LongTensor(labels)
t = time.time()
model.attack(feat_t, adj_t, labels_t, idx_train, idx_unlabeled, n_perturbations=n_pert, ll_constraint=False)
secs = time.time() - t
import deeprobust
print("RESULT" + json.dumps({"seconds": secs, "per_perturbation": secs / n_pert, "n": n_pert,
                             "torch": torch.__version__, "deeprobust": getattr(deeprobust, "__version__", "0.2.11")}))
'''


DR_GRAD_SCRIPT = r'''
import sys, warnings, numpy as np, scipy.sparse as sp, torch
warnings.filterwarnings("ignore")
torch.set_num_threads(int(sys.argv[3]))
from deeprobust.graph import utils
from deeprobust.graph.defense import GCN
from deeprobust.graph.global_attack import Metattack
o = np.load(sys.argv[1])
adj = sp.csr_matrix((o["adj_data"], o["adj_indices"], o["adj_indptr"]), shape=tuple(o["adj_shape"]))
feat = torch.FloatTensor(o["features"])
sur = GCN(nfeat=feat.shape[1], nclass=int(o["n_classes"]), nhid=16, dropout=0, with_relu=False, with_bias=False, device="cpu")
model = Metattack(sur, nnodes=adj.shape[0], feature_shape=feat.shape, attack_structure=True, attack_features=False,
                  device="cpu", lambda_=0, train_iters=100, lr=0.1, momentum=0.9)
def init():  # the same initial weights as poisonjax
    model.weights[0].data.copy_(torch.tensor(o["w1"])); model.weights[1].data.copy_(torch.tensor(o["w2"]))
    for v in model.w_velocities: v.data.fill_(0)
model._initialize = init
model.sparse_features = False
adj_t = torch.FloatTensor(adj.todense())
labels = torch.LongTensor(o["labels"])
if "changes" in o.files:  # an attacked state: DeepRobust stores each flip in both triangles of adj_changes
    model.adj_changes.data.copy_(torch.tensor(o["changes"]))
m_adj = model.get_modified_adj(adj_t)
adj_norm = utils.normalize_adj_tensor(m_adj)
model.inner_train(feat, adj_norm, o["idx_train"], o["idx_un"], labels)
g, _ = model.get_meta_grad(feat, adj_norm, o["idx_train"], o["idx_un"], labels, torch.LongTensor(o["self_labels"]))
np.save(sys.argv[2], g.detach().numpy())
'''


def grad_check(name, threads, state_path=None):
    """One exact Meta-Self meta-gradient on both sides from identical weights and labels, at the clean
    graph or (``state_path``: a perturbed adjacency ``.npz``) at an attacked state whose flips are
    the differences from the clean graph. At an attacked state only unflipped pairs are compared
    (DeepRobust's clamp zeroes the gradient of flipped ones; both sides exclude them)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import scipy.sparse as sp
    from poisonjax.data import graphs
    from poisonjax.graph import attacks as A

    g = graphs.load_graph(name)
    idx_un = np.union1d(g.idx_val, g.idx_test)
    ys = A.self_training_labels(g.adj, g.features, g.labels, g.idx_train, g.idx_val, jax.random.PRNGKey(0),
                                surrogate="prognn")
    prob = A.make_meta_problem(g.adj, g.features, g.labels, g.idx_train, idx_un, ys)
    cfg = A.MetattackConfig(budget=1, num_classes=g.num_classes, ll_constraint=False)
    st = A.metattack(cfg).init(jax.random.PRNGKey(1), prob)
    changes = None
    if state_path is not None:
        pert = sp.csr_matrix(sp.load_npz(state_path), dtype=np.float32)
        d = sp.triu(pert - sp.csr_matrix(g.adj, dtype=np.float32), 1).tocoo()
        flips = np.stack([d.row, d.col], 1).astype(np.int32)
        st = A.MetaState(a=jnp.asarray(pert.toarray()), flips=jnp.asarray(flips),
                         flip_sign=jnp.asarray(d.data.astype(np.float32)), n_flips=jnp.int32(len(flips)),
                         key=st.key, loss=st.loss)
        changes = (pert - sp.csr_matrix(g.adj, dtype=np.float32)).toarray()
    key = jax.random.PRNGKey(42)
    w1, w2 = A._init_weights(key, g.features.shape[1], cfg.hidden, g.num_classes)
    loss, gh, s = jax.jit(lambda st: A.meta_grad_hat(prob, st, cfg, key))(st)
    ours = np.asarray(A.adj_grad_from_hat(gh, st.a, s))
    ours = ours + ours.T                                   # DeepRobust differentiates symmetric changes
    adj = sp.csr_matrix(g.adj, dtype=np.float32)
    with tempfile.TemporaryDirectory() as td:
        inp, out, scr = Path(td) / "in.npz", Path(td) / "g.npy", Path(td) / "dr.py"
        np.savez(inp, adj_data=adj.data, adj_indices=adj.indices, adj_indptr=adj.indptr, adj_shape=adj.shape,
                 features=sp.csr_matrix(g.features).toarray().astype(np.float32), labels=g.labels,
                 n_classes=g.num_classes, w1=np.asarray(w1), w2=np.asarray(w2), self_labels=ys,
                 idx_train=g.idx_train, idx_un=idx_un, **({} if changes is None else {"changes": changes}))
        scr.write_text(DR_GRAD_SCRIPT)
        run = subprocess.run([str(VENV / "bin" / "python"), str(scr), str(inp), str(out), str(threads)],
                             capture_output=True, text=True, timeout=7200)
        if not out.exists():
            raise RuntimeError("DeepRobust gradient failed:\n" + run.stdout[-2000:] + run.stderr[-3000:])
        dr = np.load(out)
        dr_loss = [float(l.split(":")[1]) for l in run.stdout.splitlines() if l.startswith("attack loss")][0]
    np.fill_diagonal(ours, 0.0)
    np.fill_diagonal(dr, 0.0)
    a = np.asarray(st.a)
    unflipped = (a == g.adj.toarray()) & (np.eye(len(a)) == 0)
    ours, dr = np.where(unflipped, ours, 0.0), np.where(unflipped, dr, 0.0)
    masked = lambda m: np.where(unflipped, m * (1 - 2 * a), -np.inf)
    best = lambda m: tuple(sorted(divmod(int(np.argmax(masked(m))), len(a))))
    removals = lambda m: int(a.ravel()[np.argsort(masked(m).ravel())[::-1][:100]].sum()) // 2
    return {"loss_poisonjax": float(loss), "loss_deeprobust": dr_loss, "state": str(state_path or "clean"),
            "max_abs_diff": float(np.abs(ours - dr).max()), "max_abs_grad": float(np.abs(dr).max()),
            "best_flip_poisonjax": best(ours), "best_flip_deeprobust": best(dr),
            "removals_in_top50_poisonjax": removals(ours), "removals_in_top50_deeprobust": removals(dr)}


def setup_venv():
    """Create the DeepRobust venv as PEERS.md describes (slow: torch install)."""
    py = "python3"
    subprocess.run([py, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "pip"), "install", "-q"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    subprocess.run(pip + ["--no-deps", "deeprobust"], check=True)
    subprocess.run(pip + ["scipy", "matplotlib", "texttable", "networkx", "numba", "tqdm", "tensorboardX", "gensim",
                          "scikit-image", "torch-geometric", "scikit-learn"], check=True)
    for sub in ("defense", "global_attack", "data", "defense_pyg"):
        for f in (VENV / "lib").glob(f"python3*/site-packages/deeprobust/graph/{sub}/__init__.py"):
            txt = f.read_text()
            if not txt.startswith("import warnings"):
                f.write_text("import warnings\n" + txt)


def run_deeprobust(data_root, name, n_pert, threads):
    py = VENV / "bin" / "python"
    if not py.exists():
        raise SystemExit(f"DeepRobust venv missing at {VENV}; run with --setup first")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(DR_SCRIPT)
    out = subprocess.run([str(py), f.name, str(data_root), name, str(n_pert), str(threads)], capture_output=True,
                         text=True, timeout=7200)
    os.unlink(f.name)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[6:])
    err = "\n".join(l for l in out.stderr.splitlines() if "registered at" not in l)
    raise RuntimeError("DeepRobust run failed:\n" + out.stdout[-3000:] + err[-5000:])


def run_ours(name, n_pert, ks):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from poisonjax.data import graphs
    from poisonjax.graph import attacks as A

    g = graphs.load_graph(name)
    idx_un = np.union1d(g.idx_val, g.idx_test)
    ys = A.self_training_labels(g.adj, g.features, g.labels, g.idx_train, g.idx_val, jax.random.PRNGKey(0))
    prob = A.make_meta_problem(g.adj, g.features, g.labels, g.idx_train, idx_un, ys)
    out = {}
    for k in ks:
        steps = max(1, n_pert // k) if k > 1 else n_pert
        cfg = A.MetattackConfig(budget=steps * k + k, num_classes=g.num_classes, flips_per_step=k, ll_constraint=False)
        att = A.metattack(cfg)
        st0 = att.init(jax.random.PRNGKey(1), prob)
        step = jax.jit(att.step).lower(st0, prob).compile()
        ca = step.cost_analysis()
        ca = (ca[0] if isinstance(ca, (list, tuple)) else ca) or {}
        st = step(st0, prob)                                     # first step
        jax.block_until_ready(st.a)
        f0 = int(st.n_flips)
        t = time.time()
        for _ in range(steps):
            st = step(st, prob)
        jax.block_until_ready(st.a)
        secs = time.time() - t
        flips = int(st.n_flips) - f0
        out[k] = {"seconds": secs, "flips": flips, "per_perturbation": secs / max(1, flips),
                  "per_meta_gradient": secs / steps, "xla_counted_flops_per_step": float(ca.get("flops", float("nan")))}
    # FLOP bound: the exact step's dense work is one [N, K] @ [K, N] GEMM, K = 3 T C + 2 C (+ train rows)
    n, c, T = g.num_nodes, g.num_classes, 100
    K = 3 * T * c + 2 * c
    flops = 2.0 * n * n * K + 2.0 * len(g.idx_train) * n * T * c
    u = jnp.ones((n, K), jnp.float32)
    mm = jax.jit(lambda u: u @ u.T)
    jax.block_until_ready(mm(u))
    t = time.time()
    for _ in range(3):
        r = mm(u)
    jax.block_until_ready(r)
    gemm = (time.time() - t) / 3
    rate = 2.0 * n * n * K / gemm                       # this machine's measured GEMM FLOP rate
    fb = {"gemm_flops": flops, "gemm_seconds": gemm, "gemm_gflops": rate / 1e9,
          "bound_seconds_at_80gflops": flops / 80e9,
          "exact_step_over_gemm": out[1]["per_meta_gradient"] / gemm if 1 in out else None}
    if 1 in out:
        # the fraction of the FLOP bound: (FLOPs / step time) / GEMM rate, for the analytic count (the
        # dense meta-gradient GEMM + the training-row product) and for XLA's count of the whole step
        t1 = out[1]["per_meta_gradient"]
        fb["flop_bound_fraction_analytic"] = flops / t1 / rate
        fb["flop_bound_fraction_xla_count"] = out[1]["xla_counted_flops_per_step"] / t1 / rate
    out["flop_bound"] = fb
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cora")
    ap.add_argument("--perturbations", type=int, default=3, help="flips timed on each side")
    ap.add_argument("--ks", default="1,10", help="flips per meta-gradient for our variants")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--setup", action="store_true", help="create the DeepRobust venv first")
    ap.add_argument("--skip-deeprobust", action="store_true")
    ap.add_argument("--out", default=None, help="write the JSON result here")
    ap.add_argument("--grad-check", action="store_true", help="only compare one meta-gradient with DeepRobust's")
    ap.add_argument("--state", default=None, help="with --grad-check: a perturbed adjacency .npz whose flips "
                    "(vs the clean graph) are the attacked state to compare at")
    a = ap.parse_args()
    if a.grad_check:
        r = grad_check(a.dataset, a.threads, a.state)
        print(json.dumps(r, indent=1))
        print(f"attack loss {r['loss_poisonjax']:.8f} vs {r['loss_deeprobust']:.8f}; max |g_ours - g_DR| = "
              f"{r['max_abs_diff']:.2e} (max |g| {r['max_abs_grad']:.2e}); best flip {r['best_flip_poisonjax']} vs "
              f"{r['best_flip_deeprobust']}")
        return
    data_root = Path(os.environ.get("POISONJAX_DATA", ROOT.parent / "shared" / "data"))
    if a.setup:
        setup_venv()
    ks = [int(k) for k in a.ks.split(",")]
    res = {"dataset": a.dataset, "perturbations": a.perturbations}
    if not a.skip_deeprobust:
        res["deeprobust"] = run_deeprobust(data_root, a.dataset, a.perturbations, a.threads)
    import jax
    import jax.numpy as jnp
    res["poisonjax"] = run_ours(a.dataset, a.perturbations, ks)
    res["jax"] = jax.__version__
    res["machine"] = MACHINE.finish()
    res["ratios_valid"] = not res["machine"]["busy"]
    print(json.dumps(res, indent=1))
    if "deeprobust" in res:
        dr = res["deeprobust"]["per_perturbation"]
        print(f"\nDeepRobust Metattack (Meta-Self, T=100): {dr:.2f} s/perturbation")
        for k in ks:
            o = res["poisonjax"][k]["per_perturbation"]
            print(f"poisonjax, {k:3d} flip(s)/meta-gradient: {o:.3f} s/perturbation  -> {MACHINE.ratio(dr, o)} faster")
    fb = res["poisonjax"]["flop_bound"]
    print(f"dense GEMM of the exact step: {fb['gemm_gflops']:.1f} GFLOP/s here; exact step = "
          f"{fb['exact_step_over_gemm']:.2f}x the GEMM time; FLOP bound at 80 GFLOP/s: {fb['bound_seconds_at_80gflops']:.2f} s")
    if "flop_bound_fraction_analytic" in fb:
        print(f"exact step at {100 * fb['flop_bound_fraction_analytic']:.0f}% of its FLOP bound (analytic count "
              f"{fb['gemm_flops'] / 1e9:.1f} GFLOP; XLA's count of the whole step "
              f"{res['poisonjax'][1]['xla_counted_flops_per_step'] / 1e9:.1f} GFLOP: "
              f"{100 * fb['flop_bound_fraction_xla_count']:.0f}%) at this machine's measured GEMM rate")
    print(f"lscpu model: {res['machine']['cpu_model']} ({res['machine']['cpu_isa']}); machine {MACHINE.verdict()}")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
