r"""Graph models (flax.linen) and their training: GCN (Kipf & Welling, ICLR 2017), GAE/VGAE (Kipf &
Welling, NIPS-W 2016), plus the normalised adjacency in dense, BCOO-sparse and jraph form.

Propagation uses the renormalised adjacency

.. math::  \hat A = \tilde D^{-1/2} (A + I) \tilde D^{-1/2}, \qquad \tilde D_{ii} = 1 + \sum_j A_{ij}.

Every model takes ``a_hat`` as either a dense ``[N, N]`` array (differentiable in every entry, what
meta-gradient attacks need) or a ``jax.experimental.sparse.BCOO`` matrix (O(|E|) memory, for large
graphs); features ``x`` may likewise be dense ``[N, F]`` or BCOO.

* :class:`GCN` -- ``logits = Â σ(Â X W1 + b1) W2 + b2`` (``with_relu=False`` gives the linearised
  surrogate of Metattack).
* :class:`GraphEncoder` / :func:`vgae_loss` -- the GAE/VGAE encoder (GCN 32-16; VGAE has a second
  head for :math:`\log\sigma`), inner-product decoder :math:`\sigma(z_i^\top z_j)`, Kipf's weighted
  reconstruction loss over all :math:`N^2` pairs and the KL term.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp
from jax.experimental import sparse as jsparse


# ----------------------------------------------------------------------------------------------
# adjacency normalisation
# ----------------------------------------------------------------------------------------------

def normalize_adj(a: jax.Array) -> jax.Array:
    r"""Dense :math:`\tilde D^{-1/2}(A+I)\tilde D^{-1/2}` with row-sum degrees. ``a``: ``[N, N]``
    (any real entries; differentiable). Isolated nodes get :math:`\hat A_{ii} = 1`."""
    n = a.shape[0]
    b = a + jnp.eye(n, dtype=a.dtype)
    s = jax.lax.rsqrt(jnp.maximum(jnp.sum(b, axis=1), 1e-12))
    return s[:, None] * b * s[None, :]


def normalize_adj_sparse(adj: sp.spmatrix) -> jsparse.BCOO:
    """:func:`normalize_adj` of a scipy adjacency as a BCOO matrix (self-loops added)."""
    a = sp.csr_matrix(adj, dtype=np.float32) + sp.eye(adj.shape[0], dtype=np.float32, format="csr")
    d = np.asarray(a.sum(1)).ravel()
    s = 1.0 / np.sqrt(np.maximum(d, 1e-12))
    a = sp.diags(s) @ a @ sp.diags(s)
    return scipy_to_bcoo(a)


def scipy_to_bcoo(m: sp.spmatrix) -> jsparse.BCOO:
    """A scipy sparse matrix as ``jax.experimental.sparse.BCOO`` (float32)."""
    coo = sp.coo_matrix(m)
    idx = np.stack([coo.row, coo.col], 1).astype(np.int32)
    return jsparse.BCOO((jnp.asarray(coo.data, jnp.float32), jnp.asarray(idx)), shape=coo.shape)


def normalize_graphs_tuple(graph):
    """Return ``graph`` (a single-graph ``jraph.GraphsTuple``, both edge directions, no self-loops)
    with self-loops appended and ``edges`` set to the symmetric-normalised weights of :math:`\\hat A`."""
    n = int(np.sum(graph.n_node))
    loops = jnp.arange(n, dtype=jnp.int32)
    snd = jnp.concatenate([jnp.asarray(graph.senders), loops])
    rcv = jnp.concatenate([jnp.asarray(graph.receivers), loops])
    w = jnp.ones(snd.shape[0], jnp.float32)
    deg = jax.ops.segment_sum(w, rcv, n)
    s = jax.lax.rsqrt(deg)
    return graph._replace(senders=snd, receivers=rcv, edges=(s[snd] * s[rcv])[:, None],
                          n_edge=jnp.array([snd.shape[0]]))


def graphs_tuple_to_bcoo(graph) -> jsparse.BCOO:
    """The weighted adjacency (``edges[:, 0]`` at ``(receivers, senders)``) of a GraphsTuple as BCOO."""
    n = int(np.sum(graph.n_node))
    idx = jnp.stack([jnp.asarray(graph.receivers), jnp.asarray(graph.senders)], 1).astype(jnp.int32)
    return jsparse.BCOO((jnp.asarray(graph.edges)[:, 0], idx), shape=(n, n))


def matmul(a, b):
    """``a @ b`` for dense or BCOO ``a``."""
    return a @ b


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------

def _glorot(key, shape, dtype=jnp.float32):
    lim = jnp.sqrt(6.0 / (shape[0] + shape[1]))
    return jax.random.uniform(key, shape, dtype, -lim, lim)


def fan_out_uniform(out_dim: int):
    r"""Kipf's PyTorch / DeepRobust ``GraphConvolution`` init: :math:`U(-1/\sqrt{d_{out}}, 1/\sqrt{d_{out}})`
    for weights and biases alike (``d_out`` is the layer's output width)."""
    def init(key, shape, dtype=jnp.float32):
        lim = 1.0 / math.sqrt(out_dim)
        return jax.random.uniform(key, shape, dtype, -lim, lim)
    return init


GCN_INITS = ("glorot", "deeprobust")


class GCN(nn.Module):
    r"""Two-layer GCN (Kipf & Welling 2017): ``Â σ(Â (X W1) + b1) W2 + b2`` -> ``[N, C]`` logits.

    ``x`` is multiplied by ``W1`` first (``X W1`` then ``Â (·)``), which is the cheap order when
    ``F > H``. ``with_relu=False`` is the linearised surrogate used by Nettack/Metattack.
    Dropout is applied to the hidden layer (as DeepRobust/Pro-GNN's GCN) and, with
    ``input_dropout=True``, also to dense input features (as Kipf's code); it is active when
    ``train=True`` and a ``"dropout"`` rng is given. ``weight_init="glorot"``: Glorot-uniform weights,
    zero biases (Kipf's TensorFlow code); ``weight_init="deeprobust"``: every weight and bias of a layer from
    :math:`U(-1/\sqrt{d_{out}}, 1/\sqrt{d_{out}})` (DeepRobust's ``GraphConvolution``).
    """

    hidden: int = 16
    num_classes: int = 7
    dropout: float = 0.5
    with_relu: bool = True
    with_bias: bool = True
    input_dropout: bool = False
    weight_init: str = "glorot"

    @nn.compact
    def __call__(self, a_hat, x, train: bool = False):
        f = x.shape[1]
        if self.weight_init not in GCN_INITS:
            raise ValueError(f"GCN weight_init must be one of {GCN_INITS}, got {self.weight_init!r}")
        dr = self.weight_init == "deeprobust"
        i1 = fan_out_uniform(self.hidden) if dr else _glorot
        i2 = fan_out_uniform(self.num_classes) if dr else _glorot
        w1 = self.param("w1", i1, (f, self.hidden))
        w2 = self.param("w2", i2, (self.hidden, self.num_classes))
        drop = nn.Dropout(self.dropout, deterministic=not train)
        if isinstance(x, jsparse.BCOO) or not self.input_dropout:
            h = matmul(a_hat, x @ w1)
        else:
            h = matmul(a_hat, drop(x) @ w1)
        if self.with_bias:
            h = h + self.param("b1", i1 if dr else nn.initializers.zeros, (self.hidden,))
        if self.with_relu:
            h = nn.relu(h)
        out = matmul(a_hat, drop(h) @ w2)
        if self.with_bias:
            out = out + self.param("b2", i2 if dr else nn.initializers.zeros, (self.num_classes,))
        return out


class GraphEncoder(nn.Module):
    r"""GAE/VGAE encoder (Kipf & Welling 2016): ``H = relu(Â X W0)``, ``μ = Â H W_μ`` and, if
    ``variational``, ``log σ = Â H W_σ``. Returns ``(mu, logstd)`` each ``[N, latent]``
    (``logstd`` is zeros for GAE)."""

    hidden: int = 32
    latent: int = 16
    variational: bool = True

    @nn.compact
    def __call__(self, a_hat, x):
        f = x.shape[1]
        w0 = self.param("w0", _glorot, (f, self.hidden))
        h = nn.relu(matmul(a_hat, x @ w0))
        wmu = self.param("w_mu", _glorot, (self.hidden, self.latent))
        if self.variational:
            wsig = self.param("w_sigma", _glorot, (self.hidden, self.latent))
            both = matmul(a_hat, h @ jnp.concatenate([wmu, wsig], 1))
            return both[:, : self.latent], both[:, self.latent:]
        mu = matmul(a_hat, h @ wmu)
        return mu, jnp.zeros_like(mu)


def reparameterize(key, mu, logstd, variational: bool = True):
    """:math:`z = \\mu + \\sigma \\odot \\epsilon` (VGAE) or ``mu`` (GAE)."""
    if not variational:
        return mu
    return mu + jnp.exp(logstd) * jax.random.normal(key, mu.shape, mu.dtype)


def decode_pairs(z: jax.Array, pairs: jax.Array) -> jax.Array:
    """Inner-product decoder logits :math:`z_i^\\top z_j` for ``pairs`` ``[P, 2]`` -> ``[P]``."""
    return jnp.sum(z[pairs[:, 0]] * z[pairs[:, 1]], axis=-1)


def vgae_loss(encoder: GraphEncoder, params, a_hat, x, adj_label, key, variational: bool = True):
    r"""Kipf's GAE/VGAE objective on the full graph.

    .. math::  L = \text{norm}\cdot \frac{1}{N^2}\sum_{ij} \mathrm{BCE}_{w}(z_i^\top z_j, \tilde A_{ij})
                   - \frac{1}{2N}\,\frac{1}{N}\sum_i\sum_k (1 + 2\log\sigma_{ik} - \mu_{ik}^2 - \sigma_{ik}^2)

    with labels :math:`\tilde A = A + I` (``adj_label``, dense ``[N, N]``, may be traced), positive
    weight :math:`w = (N^2 - |\tilde A|)/|\tilde A|` and :math:`\text{norm} = N^2 / (2(N^2 - |\tilde A|))`.
    """
    mu, logstd = encoder.apply(params, a_hat, x)
    z = reparameterize(key, mu, logstd, variational)
    logits = z @ z.T
    n = adj_label.shape[0]
    n_pos = jnp.sum(adj_label)
    pos_weight = (n * n - n_pos) / n_pos
    norm = n * n / (2.0 * (n * n - n_pos))
    # weighted BCE with logits: w*y*softplus(-l) + (1-y)*softplus(l)
    rec = norm * jnp.mean(pos_weight * adj_label * jax.nn.softplus(-logits) + (1 - adj_label) * jax.nn.softplus(logits))
    if not variational:
        return rec
    kl = -(0.5 / n) * jnp.mean(jnp.sum(1 + 2 * logstd - mu ** 2 - jnp.exp(logstd) ** 2, axis=1))
    return rec + kl


class VGAEConfig(NamedTuple):
    """Victim hyper-parameters (seed paper: encoder 32-16, lr 0.005, 200 epochs, no dropout)."""

    hidden: int = 32
    latent: int = 16
    lr: float = 0.005
    epochs: int = 200
    variational: bool = True


GRAPH_EXAMPLE = {"graph": np.zeros((1,), np.float32)}
"""The dataset of a whole-graph victim (one example: the graph the loss closes over)."""


def vgae_victim(a_hat, x, adj_label, cfg: VGAEConfig = VGAEConfig()):
    r"""``(encoder, victim)``: a (V)GAE on the graph ``(a_hat, x)`` as a :class:`poisonjax.core.victims.Victim`
    whose dataset is one example, :data:`GRAPH_EXAMPLE`: the per-example loss is :func:`vgae_loss`
    ``[1]`` (labels ``adj_label`` = :math:`A + I`); ``victim.apply(variables, _)`` gives :math:`\mu` ``[N, latent]``.
    Train it full batch (``batch_size=None``) with Adam."""
    from poisonjax.core.victims import Victim
    enc = GraphEncoder(cfg.hidden, cfg.latent, cfg.variational)
    return enc, Victim(lambda k: enc.init(k, a_hat, x),
                       lambda v, batch, k: vgae_loss(enc, v, a_hat, x, adj_label, k, cfg.variational)[None],
                       lambda v, _: enc.apply(v, a_hat, x)[0])


def train_vgae(a: jax.Array, x, key, cfg: VGAEConfig = VGAEConfig()):
    """Train a (V)GAE on the dense 0/1 adjacency ``a`` ``[N, N]`` (the training graph) with Adam for
    ``cfg.epochs`` full-batch steps; returns ``(encoder, params)``. Differentiable in ``a``.

    This is the *attacker's surrogate* (:func:`poisonjax.graph.vgae_attacks.surrogate_vgae`), an
    attack internal like Metattack's inner training, kept on
    :func:`poisonjax.core.training.train_full_batch`; the *victims* of the VGAE study are trained by
    :func:`poisonjax.core.victims.train_victims` (:func:`vgae_victim`, same steps and keys)."""
    from poisonjax.core.training import train_full_batch
    enc = GraphEncoder(cfg.hidden, cfg.latent, cfg.variational)
    a_hat = normalize_adj(a)
    label = a + jnp.eye(a.shape[0], dtype=a.dtype)
    k0, k1 = jax.random.split(key)
    params = enc.init(k0, a_hat, x)
    res = train_full_batch(lambda p, k: vgae_loss(enc, p, a_hat, x, label, k, cfg.variational), params,
                           optax.adam(cfg.lr), cfg.epochs, k1)
    return enc, res.params


def vgae_embed(enc: GraphEncoder, params, a: jax.Array, x) -> jax.Array:
    """Deterministic embeddings :math:`\\mu` ``[N, latent]`` of a trained encoder on adjacency ``a``."""
    return enc.apply(params, normalize_adj(a), x)[0]


# ----------------------------------------------------------------------------------------------
# GCN training for node classification
# ----------------------------------------------------------------------------------------------

class GCNConfig(NamedTuple):
    """DeepRobust/Pro-GNN GCN training: hidden 16, dropout 0.5, Adam lr 0.01, weight decay 5e-4,
    200 epochs, parameters of the best validation loss kept (``val_selection=False``: the last
    epoch's parameters, DeepRobust's ``fit`` without ``idx_val``). ``weight_init``: ``"glorot"`` or
    ``"deeprobust"`` (see :class:`GCN`)."""

    hidden: int = 16
    dropout: float = 0.5
    lr: float = 0.01
    weight_decay: float = 5e-4
    epochs: int = 200
    with_relu: bool = True
    with_bias: bool = True
    val_selection: bool = True
    weight_init: str = "glorot"


def gcn_victim(a_hat, x, num_classes: int, cfg: GCNConfig = GCNConfig()):
    r"""``(model, victim)``: a :class:`GCN` on the graph ``(a_hat, x)`` as a transductive
    :class:`poisonjax.core.victims.Victim`.

    The dataset of this victim is a set of nodes, ``{"node": idx [B], "y": labels[idx]}``; its
    per-example loss runs the GCN on the whole graph (training mode, dropout key = the step key) and
    returns :math:`-\log\mathrm{softmax}(f_\theta(\hat A, X)_{i})_{y_i}` for the nodes ``i`` of the batch;
    ``victim.apply(variables, nodes)`` gives the eval-mode logits ``[len(nodes), C]``. Train it full
    batch (``batch_size=None``) with :func:`gcn_optimizer` and :func:`gcn_val_loss` selection.
    """
    from poisonjax.core.victims import Victim
    model = GCN(cfg.hidden, num_classes, cfg.dropout, cfg.with_relu, cfg.with_bias, weight_init=cfg.weight_init)

    def loss(v, batch, k):
        out = model.apply(v, a_hat, x, train=True, rngs={"dropout": k})
        return optax.softmax_cross_entropy_with_integer_labels(out[batch["node"]], batch["y"])

    return model, Victim(lambda k: model.init(k, a_hat, x), loss, lambda v, nodes: model.apply(v, a_hat, x)[nodes])


def gcn_optimizer(cfg: GCNConfig = GCNConfig()) -> optax.GradientTransformation:
    """DeepRobust's Adam with L2 weight decay: ``chain(add_decayed_weights(wd), adam(lr))``."""
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.adam(cfg.lr))


def gcn_val_loss(model: GCN, a_hat, x, labels, idx_val):
    """``variables -> mean cross-entropy on idx_val`` (eval mode): the model-selection score."""
    y_va = labels[idx_val]
    return lambda v: optax.softmax_cross_entropy_with_integer_labels(model.apply(v, a_hat, x)[idx_val], y_va).mean()


def _gcn_training(a_hat, x, labels, idx_train, idx_val, num_classes, cfg):
    model, victim = gcn_victim(a_hat, x, num_classes, cfg)
    kw = dict(epochs=cfg.epochs, batch_size=None,
              select=gcn_val_loss(model, a_hat, x, labels, idx_val) if cfg.val_selection else None)
    return model, victim, {"node": idx_train, "y": labels[idx_train]}, kw


def train_gcn(a_hat, x, labels, idx_train, idx_val, key, num_classes: int, cfg: GCNConfig = GCNConfig()):
    """Train one :class:`GCN` and return ``(model, params)`` at the epoch with the lowest validation
    loss (the last epoch if ``cfg.val_selection`` is False).

    Full-batch training of :func:`gcn_victim` on the nodes ``idx_train`` by the one victim engine,
    :func:`poisonjax.core.victims.train_victim` (``batch_size=None``, :func:`gcn_optimizer`,
    ``select=`` :func:`gcn_val_loss`): ``k_init, k_train = split(key)``, dropout key of epoch ``t`` =
    ``split(k_train, epochs)[t]``. ``a_hat``: normalised adjacency (dense or BCOO); ``labels`` ``[N]``;
    ``idx_*`` int index arrays. ``jax.vmap`` over ``key`` trains several seeds at once (or
    :func:`gcn_test_accuracy`, which uses :func:`poisonjax.core.victims.train_victims`)."""
    from poisonjax.core.victims import train_victim
    model, victim, data, kw = _gcn_training(a_hat, x, labels, idx_train, idx_val, num_classes, cfg)
    return model, train_victim(victim, gcn_optimizer(cfg), data, key, **kw).variables


def gcn_test_accuracy(a_hat, x, labels, idx_train, idx_val, idx_test, keys, num_classes: int,
                      cfg: GCNConfig = GCNConfig()) -> jax.Array:
    """Test accuracy ``[K]`` of ``K = len(keys)`` GCNs trained on ``a_hat`` by
    :func:`poisonjax.core.victims.train_victims` (vmapped over keys; each as :func:`train_gcn`) and
    scored by :func:`poisonjax.core.victims.evaluate_victims` on ``idx_test``.
    Compiled once per ``(num_classes, cfg)`` and array shapes (arrays are arguments, not constants)."""
    return _gcn_acc_fn(int(num_classes), cfg)(a_hat, x, jnp.asarray(labels), jnp.asarray(idx_train),
                                              jnp.asarray(idx_val), jnp.asarray(idx_test), keys)


@functools.lru_cache(maxsize=None)
def _gcn_acc_fn(num_classes, cfg):
    from poisonjax.core.victims import evaluate_victims, train_victims

    def acc(a_hat, x, labels, idx_train, idx_val, idx_test, keys):
        _, victim, data, kw = _gcn_training(a_hat, x, labels, idx_train, idx_val, num_classes, cfg)
        res = train_victims(victim, gcn_optimizer(cfg), data, keys, **kw)
        return evaluate_victims(victim.apply, res.variables, idx_test, labels[idx_test], batch_size=None)
    return jax.jit(acc)


def padded_norm_adj(adj: sp.spmatrix, pad_nnz: int = 0) -> jsparse.BCOO:
    r""":math:`\hat A = \tilde D^{-1/2}(A+I)\tilde D^{-1/2}` as BCOO, padded with zero entries to
    ``pad_nnz`` stored entries so that graphs with different edge counts share one compiled program."""
    b = normalize_adj_sparse(adj)
    nnz = b.data.shape[0]
    pad = max(int(pad_nnz), nnz)
    return jsparse.BCOO((jnp.concatenate([b.data, jnp.zeros(pad - nnz, b.data.dtype)]),
                         jnp.concatenate([b.indices, jnp.zeros((pad - nnz, 2), b.indices.dtype)])), shape=b.shape)


def gcn_accuracy_on(adj: sp.spmatrix, x, labels, idx_train, idx_val, idx_test, keys, num_classes: int,
                    cfg: GCNConfig = GCNConfig(), pad_nnz: int = 0) -> np.ndarray:
    """:func:`gcn_test_accuracy` ``[K]`` on a scipy adjacency (normalised and padded by
    :func:`padded_norm_adj`); ``x`` dense or BCOO features."""
    return np.asarray(gcn_test_accuracy(padded_norm_adj(adj, pad_nnz), x, labels, idx_train, idx_val, idx_test,
                                        keys, num_classes, cfg))
