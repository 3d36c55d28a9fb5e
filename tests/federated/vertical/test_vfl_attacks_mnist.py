"""Attacks on vanilla VFL and OPUS-VFL on the MNIST subset (4 parties, 7-pixel strips): the GRN feature inference
beats the mean-image baseline on vanilla VFL and OPUS raises its MSE; model completion beats chance."""
import jax
import numpy as np
import pytest

from poisonjax.federated.vertical import attacks as A
from poisonjax.federated.vertical import federation as F

pytestmark = [pytest.mark.slow, pytest.mark.requires_data("mnist")]


@pytest.fixture(scope="module")
def trained():
    from poisonjax.data.images import load_mnist
    d = load_mnist(n_test=1000)
    fed = F.build_federation(d.x_train, d.y_train, d.x_test, d.y_test, strip_widths=(7, 7, 7, 7), val_size=500,
                             embed_dim=8, mechanism="analytic", eps_min=0.5, eps_max=10.0, eps_lr=1.0, beta=0.01,
                             eps_warmup=50)
    out = {}
    for defense in ("vanilla", "opus"):
        pb = F.make_problem(fed, defense, eps=4.0)
        out[defense] = (pb, F.train(fed, pb, 400, progress=False).state)
    return fed, out


def _fia(fed, pb, st):
    aux = A.aux_indices(fed.y[:2000], 4)
    return A.grn_feature_inference(fed.spec, jax.random.PRNGKey(2), st.params, fed.hmask, F.dp_mask(pb), st.eps,
                                   fed.x[:, :2000], fed.vd.widths, 1, w_embed=0.1, w_out=0.1, w_prior=1.0,
                                   aux_idx=aux, w_sup=1.0, steps=1000)


def test_fia_beats_mean_image_on_vanilla_and_opus_raises_mse(trained):
    fed, runs = trained
    v = _fia(fed, *runs["vanilla"])
    o = _fia(fed, *runs["opus"])
    assert v["fia_mse"] < 0.9 * v["fia_mse_mean_image"], v
    assert o["fia_mse"] > 1.3 * v["fia_mse"], (o["fia_mse"], v["fia_mse"])


def test_lia_model_completion_beats_chance(trained):
    fed, runs = trained
    pb, st = runs["vanilla"]
    aux = A.aux_indices(fed.y)
    acc = A.model_completion(fed.spec, jax.random.PRNGKey(1), A.party_params(st.params["bottom"], 1), fed.hmask[1],
                             fed.x[1, aux], fed.y[aux], fed.x[1, :2000], fed.xte[1], fed.yte)
    assert acc > 0.3, acc                                    # chance is 0.1
    assert F.test_accuracy(fed, st, pb) > 0.85
