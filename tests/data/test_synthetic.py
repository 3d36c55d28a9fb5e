"""data.synthetic: SBM graphs are symmetric/unweighted with the requested block densities."""
import numpy as np

from poisonjax.data.synthetic import gaussian_mixture_images, interaction_logs, sbm_graph


def test_sbm_invariants_and_densities():
    adj, lab = sbm_graph(600, 3, 0.05, 0.005, seed=1)
    assert (adj != adj.T).nnz == 0 and adj.diagonal().sum() == 0 and set(np.unique(adj.data)) == {1.0}
    a = adj.toarray()
    same = lab[:, None] == lab[None, :]
    np.fill_diagonal(same, False)
    p_in = a[same].mean()
    diff = lab[:, None] != lab[None, :]
    p_out = a[diff].mean()
    assert abs(p_in - 0.05) < 0.01 and abs(p_out - 0.005) < 0.002


def test_logs_and_images_shapes():
    seqs = interaction_logs(50, 30, seed=0)
    assert len(seqs) == 50 and all(len(s) >= 3 and s.min() >= 1 and s.max() <= 30 for s in seqs)
    x, y = gaussian_mixture_images(40, 5, (6, 6, 1))
    assert x.shape == (40, 6, 6, 1) and x.min() >= 0 and x.max() <= 1 and y.max() < 5
