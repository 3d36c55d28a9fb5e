"""Metattack's self-training labels: our surrogate vs DeepRobust's, on the same graph and split.

    python benchmarks/surrogate_labels_vs_deeprobust.py --dataset cora --seeds 5

Meta-Self attacks the surrogate's predicted labels on the unlabelled nodes, so the surrogate's
accuracy there shapes the attack. Both sides train Pro-GNN's surrogate (``generate_attack.py``:
linearised 2-layer GCN, hidden 16, bias, dropout 0.5, Adam lr 0.01, 200 epochs, last epoch) on the
Nettack LCC with the Pro-GNN split; the script reports the accuracy of the predicted labels on the
unlabelled (validation + test) nodes, per seed and on average.

``generate_attack.py`` passes ``weight_decay=5e-4``, but DeepRobust's ``GCN.__init__`` sets the
weight decay to 0 whenever ``with_relu=False``; our surrogate does the same, and uses DeepRobust's
``GraphConvolution`` init. Measured on Cora, 5 seeds: 0.818 (ours) vs 0.819 (DeepRobust); with
weight decay 5e-4, ours was 0.828. DeepRobust runs in its own venv (see
``metattack_vs_deeprobust.py --setup``).
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import jax
import numpy as np
import scipy.sparse as sp

from poisonjax.data import graphs
from poisonjax.graph import attacks as A

import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine  # noqa: E402  (CPU model and load average in every output)

MACHINE = _machine.start()

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "benchmarks" / ".venvs" / "deeprobust"

DR_SCRIPT = '''
import sys, numpy as np, scipy.sparse as sp, torch
from deeprobust.graph.defense import GCN
from deeprobust.graph.utils import preprocess
d = sys.argv[1]; seeds = int(sys.argv[2])
adj = sp.load_npz(d + "/adj.npz"); x = sp.load_npz(d + "/x.npz"); m = np.load(d + "/meta.npz")
y = m["y"]; un = np.union1d(m["va"], m["te"])
for s in range(seeds):
    torch.manual_seed(s); np.random.seed(s)
    a, f, l = preprocess(adj, x, y, preprocess_adj=False)
    sur = GCN(nfeat=f.shape[1], nclass=int(y.max()) + 1, nhid=16, dropout=0.5, with_relu=False,
              with_bias=True, weight_decay=5e-4, device="cpu")
    sur.fit(f, a, l, m["tr"])
    print("ACC", float((sur.output.argmax(1).numpy()[un] == y[un]).mean()))
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cora", help="cora | citeseer | polblogs (Pro-GNN split)")
    ap.add_argument("--seeds", type=int, default=5, help="surrogates trained per side")
    args = ap.parse_args()
    g = graphs.load_graph(args.dataset)
    feats = g.features if g.features is not None else sp.eye(g.num_nodes, format="csr", dtype=np.float32)
    un = np.union1d(g.idx_val, g.idx_test)
    ours = []
    for s in range(args.seeds):
        lab = A.self_training_labels(g.adj, feats, g.labels, g.idx_train, g.idx_val, jax.random.PRNGKey(s),
                                     surrogate="prognn")
        ours.append(float((lab[un] == g.labels[un]).mean()))
    print(f"poisonjax surrogate: {np.round(ours, 4).tolist()} mean {np.mean(ours):.4f}")
    if not (VENV / "bin" / "python").exists():
        print(f"DeepRobust venv missing ({VENV}); create it with metattack_vs_deeprobust.py --setup")
        return
    with tempfile.TemporaryDirectory() as td:
        sp.save_npz(f"{td}/adj.npz", sp.csr_matrix(g.adj))
        sp.save_npz(f"{td}/x.npz", sp.csr_matrix(feats))
        np.savez(f"{td}/meta.npz", y=g.labels, tr=g.idx_train, va=g.idx_val, te=g.idx_test)
        (Path(td) / "dr.py").write_text(DR_SCRIPT)
        out = subprocess.run([str(VENV / "bin" / "python"), f"{td}/dr.py", td, str(args.seeds)],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    dr = [float(line.split()[1]) for line in out if line.startswith("ACC ")]
    print(f"DeepRobust surrogate: {np.round(dr, 4).tolist()} mean {np.mean(dr):.4f}")


if __name__ == "__main__":
    main()
