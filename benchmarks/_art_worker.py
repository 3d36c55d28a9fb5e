"""Runs inside the ART venv (torch + adversarial-robustness-toolbox); called by
``gradient_matching_vs_art.py``. Reads ``in.npz`` (NHWC data, surrogate weights in JAX layout),
crafts Witches' Brew poisons with ART's ``GradientMatchingAttack`` once per target, writes ``out.npz``."""
import json
import sys
import time

import numpy as np
import torch
from torch import nn


class SmallCNN(nn.Module):
    """The same network as poisonjax.vision.models.SmallCNN (3x3 'SAME' convs, avg-pool, GAP, MLP head)."""

    def __init__(self, cin, c1=16, c2=32, hidden=64, classes=10):
        super().__init__()
        self.c1 = nn.Conv2d(cin, c1, 3, padding=1)
        self.c2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.d1 = nn.Linear(c2, hidden)
        self.d2 = nn.Linear(hidden, classes)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = nn.functional.avg_pool2d(x, 2)
        x = torch.relu(self.c2(x))
        x = x.mean(dim=(2, 3))
        return self.d2(torch.relu(self.d1(x)))


def load_jax_weights(model, w):
    with torch.no_grad():
        model.c1.weight.copy_(torch.tensor(w["Conv_0/kernel"]).permute(3, 2, 0, 1))
        model.c1.bias.copy_(torch.tensor(w["Conv_0/bias"]))
        model.c2.weight.copy_(torch.tensor(w["Conv_1/kernel"]).permute(3, 2, 0, 1))
        model.c2.bias.copy_(torch.tensor(w["Conv_1/bias"]))
        model.d1.weight.copy_(torch.tensor(w["Dense_0/kernel"]).T)
        model.d1.bias.copy_(torch.tensor(w["Dense_0/bias"]))
        model.d2.weight.copy_(torch.tensor(w["Dense_1/kernel"]).T)
        model.d2.bias.copy_(torch.tensor(w["Dense_1/bias"]))


def main(inp, out):
    from art.attacks.poisoning import GradientMatchingAttack
    from art.estimators.classification import PyTorchClassifier
    torch.set_num_threads(int(json.loads(open(inp + ".json").read()).get("threads", 2)))
    cfg = json.loads(open(inp + ".json").read())
    d = np.load(inp)
    x_train = d["x_train"].transpose(0, 3, 1, 2).astype(np.float32)
    y_train = d["y_train"].astype(np.int64)
    weights = {k[2:]: d[k] for k in d.files if k.startswith("w:")}
    cin = x_train.shape[1]
    model = SmallCNN(cin)
    load_jax_weights(model, weights)
    dev = cfg.get("device", "cpu")              # "gpu": ART's PyTorchClassifier on CUDA (the GPU side-by-side)
    if dev == "gpu":
        model = model.cuda()
    model.eval()
    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(model.parameters(), 1e-3),
                            input_shape=x_train.shape[1:], nb_classes=10, clip_values=(0.0, 1.0), device_type=dev)
    # sanity: same logits as JAX on the test targets
    targets = d["targets"].transpose(0, 3, 1, 2).astype(np.float32)
    logits = clf.predict(targets)
    poisoned, seconds, indices = [], [], []
    s = cfg["steps"]
    sched = ([1e-1, 1e-2, 1e-3, 1e-4], [int(s * 3 / 8), int(s * 5 / 8), int(s * 7 / 8), s])
    for t in range(len(targets)):
        np.random.seed(cfg["seed"] + t)
        torch.manual_seed(cfg["seed"] + t)
        attack = GradientMatchingAttack(clf, percent_poison=cfg["budget"], epsilon=cfg["eps"], max_trials=cfg["restarts"],
                                        max_epochs=s, learning_rate_schedule=sched, batch_size=cfg["batch_size"],
                                        clip_values=(0.0, 1.0), verbose=0)
        t0 = time.perf_counter()
        xp, _ = attack.poison(targets[t:t + 1], np.array([int(d["adv"][t])]), x_train, y_train)
        if dev == "gpu":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
        changed = np.flatnonzero(np.abs(xp - x_train).reshape(len(x_train), -1).max(1) > 0)
        poisoned.append(xp[changed].transpose(0, 2, 3, 1))     # only the changed rows (NHWC)
        indices.append(changed)
    n_p = max(len(i) for i in indices)
    idx = np.full((len(targets), n_p), -1, np.int64)
    rows = np.zeros((len(targets), n_p) + x_train.shape[2:] + x_train.shape[1:2], np.float32)
    for t, i in enumerate(indices):
        idx[t, :len(i)] = i
        rows[t, :len(i)] = poisoned[t]
    np.savez(out, poisoned_rows=rows, seconds=np.array(seconds), poison_indices=idx, logits=logits,
             versions=np.array([__import__("art").__version__, torch.__version__]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
