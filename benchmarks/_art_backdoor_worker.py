"""Runs inside the ART venv (torch + adversarial-robustness-toolbox); called by
``backdoor_defenses_vs_art.py``. Reads ``in.npz`` (the victim's penultimate features of the poisoned
training set, its labels, the poisoned images, the defender's clean images and the victim's weights
in JAX layout) and runs ART's ``ActivationDefence``, ``SpectralSignatureDefense`` (on the given
features, through an identity "classifier") and ``STRIP`` (on the same victim ported to torch);
writes per-defense seconds and flags to ``out.npz``."""
import json
import sys
import time

import numpy as np
import torch
from torch import nn


class BNConvNet(nn.Module):
    """poisonjax.vision.backdoor.resnet.BNConvNet in torch: conv3x3 -> BN -> ReLU -> avgpool 2 ->
    conv3x3 -> BN -> ReLU -> global average pool -> linear (eval mode: BN running statistics)."""

    def __init__(self, cin, c0, c1, classes):
        super().__init__()
        self.conv0, self.bn0 = nn.Conv2d(cin, c0, 3, padding=1), nn.BatchNorm2d(c0, eps=1e-5)
        self.conv1, self.bn1 = nn.Conv2d(c0, c1, 3, padding=1), nn.BatchNorm2d(c1, eps=1e-5)
        self.linear = nn.Linear(c1, classes)
        self.probabilities = True           # ART's STRIP takes the entropy of the classifier's outputs

    def forward(self, x):
        x = torch.relu(self.bn0(self.conv0(x)))
        x = nn.functional.avg_pool2d(x, 2)
        x = torch.relu(self.bn1(self.conv1(x)))
        logits = self.linear(x.mean(dim=(2, 3)))
        return torch.softmax(logits, dim=1) if self.probabilities else logits


def load_jax_weights(m, w):
    with torch.no_grad():
        for i, (conv, bn) in enumerate(((m.conv0, m.bn0), (m.conv1, m.bn1))):
            conv.weight.copy_(torch.tensor(w[f"params/conv{i}/kernel"]).permute(3, 2, 0, 1))
            conv.bias.copy_(torch.tensor(w[f"params/conv{i}/bias"]))
            bn.weight.copy_(torch.tensor(w[f"params/bn{i}/scale"]))
            bn.bias.copy_(torch.tensor(w[f"params/bn{i}/bias"]))
            bn.running_mean.copy_(torch.tensor(w[f"batch_stats/bn{i}/mean"]))
            bn.running_var.copy_(torch.tensor(w[f"batch_stats/bn{i}/var"]))
        m.linear.weight.copy_(torch.tensor(w["params/linear/kernel"]).T)
        m.linear.bias.copy_(torch.tensor(w["params/linear/bias"]))


def main(inp, out):
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
    from art.defences.transformer.poisoning import STRIP
    from art.estimators.classification import PyTorchClassifier
    cfg = json.loads(open(inp + ".json").read())
    torch.set_num_threads(int(cfg.get("threads", 2)))
    d = np.load(inp)
    feats, y, C = d["features"].astype(np.float32), d["y"].astype(np.int64), int(cfg["num_classes"])
    onehot = np.eye(C, dtype=np.float32)[y]
    res = {}
    # features -> identity "classifier": ART's detectors read activations of its last layer
    ident = PyTorchClassifier(model=nn.Sequential(nn.Identity()), loss=nn.CrossEntropyLoss(),
                              input_shape=feats.shape[1:], nb_classes=C)
    for rep in range(cfg["repeats"]):
        t0 = time.perf_counter()
        ac = ActivationDefence(ident, feats, onehot)
        _, clean = ac.detect_poison(nb_clusters=2, nb_dims=cfg["nb_dims"], reduce="FastICA",
                                    cluster_analysis="smaller")
        res.setdefault("ac_seconds", []).append(time.perf_counter() - t0)
    res["ac_flags"] = np.asarray(clean) == 0
    for rep in range(cfg["repeats"]):
        t0 = time.perf_counter()
        ss = SpectralSignatureDefense(ident, feats, onehot, batch_size=1024, eps_multiplier=1.5,
                                      expected_pp_poison=cfg["budget"])
        _, clean = ss.detect_poison()
        res.setdefault("ss_seconds", []).append(time.perf_counter() - t0)
    res["ss_flags"] = np.asarray(clean) == 0
    # STRIP on the same victim
    x = d["x"].transpose(0, 3, 1, 2).astype(np.float32)
    xc = d["x_clean"].transpose(0, 3, 1, 2).astype(np.float32)
    w = {k[2:]: d[k] for k in d.files if k.startswith("w:")}
    m = BNConvNet(x.shape[1], int(cfg["c0"]), int(cfg["c1"]), C)
    load_jax_weights(m, w)
    m.eval()
    clf = PyTorchClassifier(model=m, loss=nn.CrossEntropyLoss(), input_shape=x.shape[1:], nb_classes=C,
                            clip_values=(0.0, 1.0))
    m.probabilities = False
    res["logits_check"] = clf.predict(x[:8])
    m.probabilities = True
    np.random.seed(cfg["seed"])
    t0 = time.perf_counter()
    defended = STRIP(clf)(num_samples=cfg["n_overlay"], false_acceptance_rate=cfg["frr"])
    defended.mitigate(xc)
    pred = defended.predict(x)
    res["strip_seconds"] = [time.perf_counter() - t0]
    res["strip_flags"] = np.all(pred == 0, axis=1)                # ART abstains (all-zero row) on detected inputs
    import art
    res["versions"] = np.array([art.__version__, torch.__version__])
    np.savez(out, **{k: np.asarray(v) for k, v in res.items()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
