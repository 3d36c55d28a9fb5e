"""Graph loaders: counts from each dataset's PROVENANCE.md, restricted unpickler, conversions."""
import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.data import graphs
from poisonjax.data._base import DataNotFoundError


@pytest.mark.parametrize("name,nodes,edges,feats,classes", [("cora", 2708, 5278, 1433, 7),
                                                             ("citeseer", 3327, 4552, 3703, 6)])
def test_planetoid_counts(name, nodes, edges, feats, classes):
    g = graphs.load_planetoid(name)
    assert (g.num_nodes, g.num_edges, g.features.shape[1], g.num_classes) == (nodes, edges, feats, classes)
    assert len(g.idx_train) == 20 * classes and len(g.idx_val) == 500
    assert len(g.idx_test) == 1000
    assert abs(g.adj - g.adj.T).nnz == 0 and g.adj.diagonal().sum() == 0


def test_pubmed_structure_counts():
    g = graphs.load_pubmed_structure()
    assert (g.num_nodes, g.num_edges, g.features) == (19717, 44324, None)
    assert np.bincount(g.labels).tolist() == [4103, 7739, 7875]


@pytest.mark.parametrize("name,nodes,edges", [("cora", 2485, 5069), ("citeseer", 2110, 3668),
                                              ("polblogs", 1222, 16714), ("cora_ml", 2810, 7981)])
def test_nettack_lcc_counts(name, nodes, edges):
    g = graphs.load_nettack_npz(name, lcc=True)
    assert (g.num_nodes, g.num_edges) == (nodes, edges)
    assert sp.csgraph.connected_components(g.adj)[0] == 1


def test_nettack_full_graph_counts():
    g = graphs.load_nettack_npz("cora", lcc=False)
    assert (g.num_nodes, g.num_edges) == (2708, 5278)


@pytest.mark.parametrize("name,flips,sizes", [("cora", [253, 506, 760, 1013, 1267], (247, 249, 1988)),
                                              ("citeseer", [183, 366, 550, 733, 917], (210, 211, 1688))])
def test_prognn_perturbed_and_splits(name, flips, sizes):
    g = graphs.load_graph(name)
    assert (len(g.idx_train), len(g.idx_val), len(g.idx_test)) == sizes
    for rate, k in zip(graphs.PROGNN_RATES, flips):
        a = graphs.load_prognn_perturbed(name, rate)
        assert sp.triu(abs(a - g.adj), 1).nnz == k == int(rate * g.num_edges)


def test_graphs_tuple_roundtrip():
    g = graphs.load_nettack_npz("polblogs")
    gt = g.to_graphs_tuple()
    assert int(gt.n_edge[0]) == 2 * 16714 and gt.nodes.shape == (1222, 0)
    rebuilt = sp.coo_matrix((np.ones(len(gt.senders)), (gt.senders, gt.receivers)), shape=(1222, 1222))
    assert abs(rebuilt - g.adj).nnz == 0


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    p = tmp_path / "evil"
    p.write_bytes(pickle.dumps(__import__("os").system, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        graphs._load_pickle(p)


def test_missing_data_message(tmp_path):
    with pytest.raises(DataNotFoundError, match="POISONJAX_DATA"):
        graphs.load_nettack_npz("cora", data_dir=tmp_path)


def test_as_symmetric_unweighted_converts_with_warning_and_rejects():
    a = sp.csr_matrix(np.array([[1, 2, 0], [0, 0, 1], [0, 0, 0]], dtype=float))
    with pytest.warns(UserWarning, match="symmetric unweighted"):
        b = graphs.as_symmetric_unweighted(a)
    assert (b.toarray() == np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])).all()
    with pytest.raises(PoisonJaxInputError, match="square"):
        graphs.as_symmetric_unweighted(np.ones((2, 3)))
    with pytest.raises(PoisonJaxInputError, match="negative"):
        graphs.as_symmetric_unweighted(-np.eye(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graphs.as_symmetric_unweighted(b)  # already clean: no warning


def test_unknown_dataset():
    with pytest.raises(PoisonJaxInputError, match="expected one of"):
        graphs.load_graph("imagenet")
