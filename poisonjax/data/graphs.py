r"""Graph datasets: Planetoid ``ind.*`` pickles, Nettack/Metattack ``.npz``, Pro-GNN pre-attacked graphs.

Every loader returns a :class:`GraphData` whose adjacency is a **symmetric, unweighted, zero-diagonal**
``scipy.sparse.csr_matrix`` (float32), with features (CSR, float32, or ``None``), integer labels and,
where the source defines one, a node split. :meth:`GraphData.to_graphs_tuple` gives the
``jraph.GraphsTuple`` form (both edge directions, ``n_edge = nnz``).

Loaders:

* :func:`load_planetoid` -- ``ind.{cora,citeseer}.*`` (Yang et al. 2016 / Kipf & Welling 2017) read
  with a **restricted unpickler** that only resolves the six globals those Python-2 pickles need, so
  a tampered file cannot execute code.
* :func:`load_pubmed_structure` -- the partial PubMed folder (graph + labels; no ``allx`` features).
* :func:`load_nettack_npz` -- ``{cora,citeseer,cora_ml,polblogs}.npz`` (Zügner et al. 2018/2019),
  symmetrised, binarised, optionally reduced to the largest connected component (LCC; the node order
  is ``np.where(component == largest)[0]``, as in Nettack/DeepRobust/Pro-GNN).
* :func:`load_prognn_split`, :func:`load_prognn_perturbed` -- Pro-GNN's (Jin et al. KDD 2020)
  10/10/80 splits and Metattack/Nettack pre-attacked adjacencies over the same LCC.

:func:`as_symmetric_unweighted` is the single entry point that validates user adjacencies (directed
or weighted inputs are converted with a warning; non-square or non-finite ones are rejected).
"""
from __future__ import annotations

import dataclasses
import json
import pickle
import warnings
from typing import Optional

import numpy as np
import scipy.sparse as sp

from poisonjax.core.validation import PoisonJaxInputError, check_choice
from poisonjax.data._base import DataNotFoundError, require

PLANETOID_DIR = "planetoid_cora_citeseer"
PUBMED_DIR = "planetoid_pubmed_partial"
NETTACK_DIR = "nettack_npz_cora_citeseer_polblogs"
PROGNN_DIR = "prognn_perturbed_graphs"
NETTACK_NAMES = ("cora", "citeseer", "cora_ml", "polblogs")
PROGNN_NAMES = ("cora", "citeseer", "polblogs")
PROGNN_RATES = (0.05, 0.1, 0.15, 0.2, 0.25)


@dataclasses.dataclass
class GraphData:
    """An undirected attributed graph.

    Attributes:
      adj: ``[N, N]`` symmetric 0/1 CSR (float32), zero diagonal.
      features: ``[N, F]`` CSR float32, or ``None`` (e.g. polblogs).
      labels: ``[N]`` int32 class ids, or ``None``.
      name: dataset name.
      idx_train, idx_val, idx_test: node index arrays of a split, or ``None``.
      node_ids: ``[N]`` ids of these nodes in the source file (identity unless an LCC was taken).
    """

    adj: sp.csr_matrix
    features: Optional[sp.csr_matrix]
    labels: Optional[np.ndarray]
    name: str = ""
    idx_train: Optional[np.ndarray] = None
    idx_val: Optional[np.ndarray] = None
    idx_test: Optional[np.ndarray] = None
    node_ids: Optional[np.ndarray] = None

    @property
    def num_nodes(self) -> int:
        return self.adj.shape[0]

    @property
    def num_edges(self) -> int:
        """Undirected edges (each counted once)."""
        return int(sp.triu(self.adj, 1).nnz)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if self.labels is not None else 0

    def dense_features(self, identity_if_missing: bool = True) -> np.ndarray:
        """``[N, F]`` float32 features; the identity matrix if there are none (as for polblogs)."""
        if self.features is None:
            if not identity_if_missing:
                raise PoisonJaxInputError(f"graph {self.name!r} has no features")
            return np.eye(self.num_nodes, dtype=np.float32)
        return np.asarray(self.features.todense(), dtype=np.float32)

    def with_split(self, idx_train, idx_val, idx_test) -> "GraphData":
        return dataclasses.replace(self, idx_train=np.asarray(idx_train), idx_val=np.asarray(idx_val),
                                   idx_test=np.asarray(idx_test))

    def to_graphs_tuple(self):
        """``jraph.GraphsTuple`` with both directions of every edge (``senders``/``receivers`` of
        length ``nnz``), node features (dense) in ``nodes`` and unit edge weights in ``edges``."""
        import jraph
        coo = self.adj.tocoo()
        feats = self.dense_features() if self.features is not None else np.zeros((self.num_nodes, 0), np.float32)
        return jraph.GraphsTuple(nodes=feats, edges=coo.data.astype(np.float32)[:, None],
                                 senders=coo.row.astype(np.int32), receivers=coo.col.astype(np.int32),
                                 n_node=np.array([self.num_nodes]), n_edge=np.array([coo.nnz]), globals=None)


# ----------------------------------------------------------------------------------------------
# validation / conversion
# ----------------------------------------------------------------------------------------------

def as_symmetric_unweighted(adj, name: str = "adj", warn: bool = True) -> sp.csr_matrix:
    """Return ``adj`` as a symmetric 0/1 float32 CSR with zero diagonal.

    Directed inputs are symmetrised (``A + A^T > 0``), weighted ones binarised (``A != 0``) and
    self-loops dropped, each with a ``UserWarning`` (silenced with ``warn=False``). Non-square,
    non-finite or negative inputs raise :class:`PoisonJaxInputError`.
    """
    a = sp.csr_matrix(adj, dtype=np.float64) if not sp.issparse(adj) else adj.tocsr().astype(np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise PoisonJaxInputError(f"{name} must be a square [N, N] adjacency, got shape {a.shape}")
    if a.nnz and not np.all(np.isfinite(a.data)):
        raise PoisonJaxInputError(f"{name} contains NaN/inf entries; expected a 0/1 adjacency")
    if a.nnz and a.data.min() < 0:
        raise PoisonJaxInputError(f"{name} has negative entries; expected a 0/1 (unweighted) adjacency")
    a.eliminate_zeros()
    msgs = []
    if a.nnz and np.any(a.data != 1):
        msgs.append("weighted entries binarised")
        a.data[:] = 1.0
    if (a != a.T).nnz:
        msgs.append("directed edges symmetrised")
        a = ((a + a.T) > 0).astype(np.float64)
    if a.diagonal().any():
        msgs.append("self-loops removed")
        a = a.tolil()
        a.setdiag(0)
        a = a.tocsr()
    a.eliminate_zeros()
    if msgs and warn:
        warnings.warn(f"{name}: expected a symmetric unweighted adjacency; " + ", ".join(msgs), UserWarning,
                      stacklevel=2)
    a = a.astype(np.float32).tocsr()
    a.sort_indices()
    return a


def largest_connected_component(adj: sp.spmatrix) -> np.ndarray:
    """Sorted node ids of the largest connected component (ties: lowest component id)."""
    _, comp = sp.csgraph.connected_components(adj, directed=False)
    sizes = np.bincount(comp)
    return np.where(comp == np.argmax(sizes))[0]


# ----------------------------------------------------------------------------------------------
# Planetoid
# ----------------------------------------------------------------------------------------------

def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as r
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct as r
    return r


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals the Planetoid pickles use; anything else is refused."""

    def find_class(self, module, name):
        import builtins
        import collections
        allowed = {
            ("scipy.sparse.csr", "csr_matrix"): lambda: sp.csr_matrix,
            ("scipy.sparse._csr", "csr_matrix"): lambda: sp.csr_matrix,
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): lambda: np.ndarray,
            ("numpy", "dtype"): lambda: np.dtype,
            ("collections", "defaultdict"): lambda: collections.defaultdict,
            ("__builtin__", "list"): lambda: builtins.list,
            ("builtins", "list"): lambda: builtins.list,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a Planetoid file")
        return allowed[(module, name)]()


def _load_pickle(path):
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f, encoding="latin1").load()


def _graph_dict_to_adj(graph: dict, n: int) -> sp.csr_matrix:
    rows = np.concatenate([np.full(len(v), k) for k, v in graph.items()]).astype(np.int64)
    cols = np.concatenate([np.asarray(v, dtype=np.int64) for v in graph.values()])
    a = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return as_symmetric_unweighted(a, warn=False)


def load_planetoid(name: str = "cora", data_dir=None) -> GraphData:
    """Load Planetoid Cora or Citeseer (``ind.*``) as in Kipf & Welling's ``load_data``.

    Features are ``vstack(allx, tx)`` with the test rows put at their ``test.index`` positions
    (Citeseer's 15 feature-less test ids get zero feature rows and label 0, as in the GCN code). The split is the Planetoid one: 20 labels per class for
    training (``x``), 500 validation nodes after them, and the 1,000 test ids.

    Counts (PROVENANCE.md): Cora 2,708 nodes / 5,278 edges / 1,433 features / 7 classes;
    Citeseer 3,327 / 4,552 / 3,703 / 6.
    """
    check_choice("planetoid dataset", name, ("cora", "citeseer"))
    files = {}
    for s in ("x", "y", "tx", "ty", "allx", "ally", "graph"):
        files[s] = _load_pickle(require(f"{PLANETOID_DIR}/ind.{name}.{s}", data_dir, what=f"Planetoid {name} {s}"))
    test_idx = np.loadtxt(require(f"{PLANETOID_DIR}/ind.{name}.test.index", data_dir), dtype=np.int64)
    return _assemble_planetoid(name, files, test_idx)


def _assemble_planetoid(name, f, test_idx):
    test_sorted = np.sort(test_idx)
    tx, ty = f["tx"], np.asarray(f["ty"])
    if name == "citeseer":  # isolated test ids have no features: pad with zero rows
        full = np.arange(test_sorted.min(), test_sorted.max() + 1)
        tx_ext = sp.lil_matrix((len(full), tx.shape[1]), dtype=np.float32)
        tx_ext[test_sorted - test_sorted.min(), :] = tx
        ty_ext = np.zeros((len(full), ty.shape[1]), dtype=ty.dtype)
        ty_ext[test_sorted - test_sorted.min(), :] = ty
        tx, ty = tx_ext.tocsr(), ty_ext
    feats = sp.vstack([f["allx"], tx]).tolil()
    feats[test_idx, :] = feats[test_sorted, :]
    labels = np.vstack([np.asarray(f["ally"]), ty])
    labels[test_idx, :] = labels[test_sorted, :]
    n = max(feats.shape[0], max(f["graph"].keys()) + 1)
    adj = _graph_dict_to_adj(f["graph"], n)
    y = labels.argmax(1).astype(np.int32)
    n_lab = np.asarray(f["y"]).shape[0]
    return GraphData(adj=adj, features=sp.csr_matrix(feats, dtype=np.float32), labels=y, name=name,
                     idx_train=np.arange(n_lab), idx_val=np.arange(n_lab, n_lab + 500), idx_test=test_sorted,
                     node_ids=np.arange(n))


def load_pubmed_structure(data_dir=None) -> GraphData:
    """PubMed graph and labels (19,717 nodes / 44,324 edges / 3 classes) with **no features**
    (``allx`` is missing from the shared folder; use identity or random features). The Planetoid
    split (60 train / 500 val / 1,000 test) is attached."""
    graph = _load_pickle(require(f"{PUBMED_DIR}/ind.pubmed.graph", data_dir, what="PubMed graph"))
    ally = np.asarray(_load_pickle(require(f"{PUBMED_DIR}/ind.pubmed.ally", data_dir)))
    ty = np.asarray(_load_pickle(require(f"{PUBMED_DIR}/ind.pubmed.ty", data_dir)))
    test_idx = np.loadtxt(require(f"{PUBMED_DIR}/ind.pubmed.test.index", data_dir), dtype=np.int64)
    n = max(graph.keys()) + 1
    labels = np.vstack([ally, ty])
    labels[test_idx, :] = labels[np.sort(test_idx), :]
    adj = _graph_dict_to_adj(graph, n)
    return GraphData(adj=adj, features=None, labels=labels.argmax(1).astype(np.int32), name="pubmed",
                     idx_train=np.arange(60), idx_val=np.arange(60, 560), idx_test=np.sort(test_idx),
                     node_ids=np.arange(n))


# ----------------------------------------------------------------------------------------------
# Nettack .npz and Pro-GNN
# ----------------------------------------------------------------------------------------------

def load_nettack_npz(name: str = "cora", lcc: bool = True, data_dir=None) -> GraphData:
    """Load a Nettack/Metattack ``.npz`` graph: ``A = (A + A^T) > 0``, zero diagonal, and with
    ``lcc=True`` only the largest connected component (node order preserved).

    Counts (PROVENANCE.md), LCC nodes / edges: cora 2,485 / 5,069; citeseer 2,110 / 3,668;
    polblogs 1,222 / 16,714 (no features); cora_ml 2,810 / 7,981. Only ``allow_pickle=False`` keys
    are read.
    """
    check_choice("nettack dataset", name, NETTACK_NAMES)
    path = require(f"{NETTACK_DIR}/{name}.npz", data_dir, what=f"Nettack {name}.npz")
    with np.load(path, allow_pickle=False) as d:
        adj = sp.csr_matrix((d["adj_data"], d["adj_indices"], d["adj_indptr"]), shape=tuple(d["adj_shape"]))
        feats = None
        if "attr_data" in d:
            feats = sp.csr_matrix((d["attr_data"], d["attr_indices"], d["attr_indptr"]),
                                  shape=tuple(d["attr_shape"]), dtype=np.float32)
        labels = np.asarray(d["labels"]).astype(np.int32)
    adj = as_symmetric_unweighted(adj, warn=False)
    ids = np.arange(adj.shape[0])
    if lcc:
        ids = largest_connected_component(adj)
        adj = adj[ids][:, ids].tocsr()
        feats = feats[ids] if feats is not None else None
        labels = labels[ids]
    return GraphData(adj=adj, features=feats, labels=labels, name=name, node_ids=ids)


def load_prognn_split(name: str = "cora", data_dir=None):
    """Pro-GNN's ``(idx_train, idx_val, idx_test)`` over the LCC of the Nettack graph (10/10/80)."""
    check_choice("prognn dataset", name, PROGNN_NAMES)
    path = require(f"{PROGNN_DIR}/splits/{name}_prognn_splits.json", data_dir, what=f"Pro-GNN {name} split")
    s = json.loads(path.read_text())
    return tuple(np.asarray(s[k], dtype=np.int64) for k in ("idx_train", "idx_val", "idx_test"))


def load_prognn_perturbed(name: str = "cora", rate: float = 0.05, attack: str = "meta",
                          data_dir=None) -> sp.csr_matrix:
    """Pro-GNN's pre-attacked adjacency (DeepRobust's Metattack for ``attack="meta"``, rates
    0.05..0.25; Nettack for ``attack="nettack"``, ``rate`` = perturbations per target 1..5) over the
    LCC of :func:`load_nettack_npz` in the same node order. Raises ``DataNotFoundError`` if absent."""
    check_choice("prognn dataset", name, PROGNN_NAMES)
    check_choice("prognn attack", attack, ("meta", "nettack"))
    if attack == "meta":
        fn = f"meta/{name}_meta_adj_{float(rate):g}.npz"
    else:
        fn = f"nettack/{name}_nettack_adj_{float(rate):.1f}.npz"
    path = require(f"{PROGNN_DIR}/{fn}", data_dir, what=f"Pro-GNN {attack} {name} rate {rate}")
    return as_symmetric_unweighted(sp.load_npz(path), name=str(fn), warn=False)


def load_graph(name: str, data_dir=None, split: str = "prognn") -> GraphData:
    """Load ``name`` for node classification: ``cora``/``citeseer``/``polblogs``/``cora_ml`` from the
    Nettack ``.npz`` (LCC) with the Pro-GNN split (``split="prognn"``, where available) or a seeded
    random 10/10/80 split (``split="random"``); ``planetoid_cora``/``planetoid_citeseer`` from the
    ``ind.*`` files with the Planetoid split; ``pubmed`` (structure only)."""
    if name.startswith("planetoid_"):
        return load_planetoid(name.split("_", 1)[1], data_dir)
    if name == "pubmed":
        return load_pubmed_structure(data_dir)
    check_choice("dataset", name, NETTACK_NAMES + ("planetoid_cora", "planetoid_citeseer", "pubmed"))
    prognn = split == "prognn" and name in PROGNN_NAMES
    try:
        g = load_nettack_npz(name, lcc=True, data_dir=data_dir)
        if prognn:
            return g.with_split(*load_prognn_split(name, data_dir))
    except DataNotFoundError:  # name every missing file of both folders in one error
        from poisonjax.data.registry import require_datasets
        require_datasets([NETTACK_DIR] + ([PROGNN_DIR] if prognn else []), data_dir, what=f"graph {name!r}")
        raise
    return g.with_split(*random_node_split(g.num_nodes, seed=15))


def random_node_split(n: int, train: float = 0.1, val: float = 0.1, seed: int = 0):
    """A seeded random ``(idx_train, idx_val, idx_test)`` node split (sorted index arrays)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    a, b = int(round(train * n)), int(round((train + val) * n))
    return np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:])
