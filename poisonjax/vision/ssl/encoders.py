r"""Pre-trained encoders as values: :class:`EncoderBundle`, batched feature extraction, orbax save/load, and
the CIFAR-10 20k JPEG set the encoders are pre-trained on.

An encoder is the BatchNorm CIFAR ResNet of :mod:`poisonjax.vision.backdoor.resnet` used with
``return_features=True``: :math:`f(x) \in \mathbb{R}^D` is the penultimate representation (after the final
BN + ReLU + global average pool), :math:`D = 4w` for ``arch="narrow"`` (width ``w``) and 512 for
``arch="preact18"``. The classification head ``linear`` is never created (its parameters are absent).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_positive_int
from poisonjax.data.images import CIFAR10_20K_DIR  # noqa: F401  (kept importable from here)

ARCHS = ("narrow", "preact18")


class EncoderBundle(NamedTuple):
    """A feature encoder: ``module`` (flax, called as ``module.apply(variables, x, train=False,
    return_features=True)``), ``variables`` (``{"params", "batch_stats"}``) and ``meta`` (a JSON-able dict:
    ``arch``, ``width``, ``feature_dim``, ``trained_by``, ``epochs``, and, when known, ``probe_accuracy``
    (clean linear-probe accuracy) and ``attack`` / ``target_class`` / ``trigger`` for a poisoned encoder)."""

    module: Any
    variables: Dict[str, Any]
    meta: Dict[str, Any]


def build_encoder(arch: str = "narrow", width: int = 16):
    """The flax module of an encoder: ``narrow_resnet(width=width)`` or ``PreActResNet18()``; returns
    ``(module, feature_dim)``."""
    from poisonjax.vision.backdoor.resnet import PreActResNet18, narrow_resnet
    check_choice("arch", arch, ARCHS)
    if arch == "narrow":
        width = check_positive_int("width", width)
        return narrow_resnet(width=width), 4 * width
    return PreActResNet18(), 512


def init_encoder(key: jax.Array, arch: str = "narrow", width: int = 16, image_shape=(32, 32, 3)):
    """Fresh ``(module, variables, feature_dim)`` (parameters of the feature path only)."""
    module, d = build_encoder(arch, width)
    variables = _init_fn(module, tuple(int(s) for s in image_shape))(key)
    return module, {"params": variables["params"], "batch_stats": variables["batch_stats"]}, d


@functools.lru_cache(maxsize=16)
def _init_fn(module, image_shape):
    return jax.jit(lambda k: module.init(k, jnp.zeros((1,) + image_shape, jnp.float32), train=False,
                                         return_features=True))


@functools.lru_cache(maxsize=16)
def _encode_fn(module):
    return jax.jit(lambda v, x: module.apply(v, x, train=False, return_features=True))


def check_images(name: str, x, min_n: int = 1) -> np.ndarray:
    """``x`` as float32 ``[N, H, W, C]`` in [0, 1] with ``N >= min_n``, else one :class:`PoisonJaxInputError`."""
    x = np.asarray(x, np.float32) if not isinstance(x, jax.Array) else x
    if x.ndim != 4:
        raise PoisonJaxInputError(f"{name} must be images [N, H, W, C], got shape {tuple(x.shape)}")
    if x.shape[0] < min_n:
        raise PoisonJaxInputError(f"{name} must hold at least {min_n} image(s), got {x.shape[0]}")
    lo, hi = float(jnp.min(x)), float(jnp.max(x))
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise PoisonJaxInputError(f"{name} must hold pixel values in [0, 1], got range [{lo:.3g}, {hi:.3g}]")
    return x


def encode(bundle: EncoderBundle, x, batch_size: int = 512) -> jax.Array:
    """Features ``[N, D]`` of images ``x [N, H, W, C]`` in eval mode (running BN statistics).

    Batched by ``batch_size``; the last batch is zero-padded to full size, so the jitted function compiles
    once per ``(module, batch shape)``."""
    batch_size = check_positive_int("batch_size", batch_size)
    x = check_images("x", x)
    fn = _encode_fn(bundle.module)
    n = x.shape[0]
    bs = min(batch_size, n)
    out = []
    for i in range(0, n, bs):
        xb = jnp.asarray(x[i:i + bs])
        m = xb.shape[0]
        if m < bs:
            xb = jnp.concatenate([xb, jnp.zeros((bs - m,) + xb.shape[1:], xb.dtype)])
        out.append(fn(bundle.variables, xb)[:m])
    return jnp.concatenate(out)


def key_fingerprint(key) -> str:
    """A short sha256 of a PRNG key's data (identifies a run's key in a runner config)."""
    import hashlib
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return hashlib.sha256(np.asarray(key).tobytes()).hexdigest()[:16]


def data_fingerprint(x) -> str:
    """A cheap fingerprint of an image array (shape and a strided sum) for a runner config, so that a workdir
    of another data set is refused on resume."""
    x = np.asarray(x)
    return f"{x.shape}:{float(x[:, ::4, ::4].sum()):.6e}"


# ------------------------------------------------------------------------------------------- orbax I/O ---

def save_encoder(path, bundle: EncoderBundle) -> Path:
    """Write ``bundle`` to the directory ``path``: the variables as an orbax checkpoint (``path/variables``)
    and ``meta`` as ``path/meta.json`` (written last, so a directory with ``meta.json`` is complete)."""
    import orbax.checkpoint as ocp
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    if (path / "meta.json").exists():
        (path / "meta.json").unlink()
    ckpt = path / "variables"
    if ckpt.exists():
        import shutil
        shutil.rmtree(ckpt)
    with ocp.StandardCheckpointer() as c:
        c.save(ckpt, jax.tree.map(np.asarray, bundle.variables))
    (path / "meta.json").write_text(json.dumps(bundle.meta, indent=1, sort_keys=True, default=str))
    return path


def load_encoder(path, *, arch: Optional[str] = None, width: Optional[int] = None) -> EncoderBundle:
    """Read an encoder written by :func:`save_encoder`.

    ``arch`` / ``width``: what the caller expects; a checkpoint of another architecture raises
    :class:`PoisonJaxInputError` naming the argument (before anything is restored or trained)."""
    import orbax.checkpoint as ocp
    path = Path(path).absolute()
    if not (path / "meta.json").exists():
        raise FileNotFoundError(f"no encoder checkpoint at {path} (expected {path / 'meta.json'})")
    meta = json.loads((path / "meta.json").read_text())
    if arch is not None:
        check_choice("arch", arch, ARCHS)
        if meta.get("arch") != arch:
            raise PoisonJaxInputError(f"arch: the checkpoint at {path} holds a {meta.get('arch')!r} encoder, "
                                      f"but arch={arch!r} was requested")
    if width is not None and meta.get("arch") == "narrow" and int(meta.get("width", -1)) != int(width):
        raise PoisonJaxInputError(f"width: the checkpoint at {path} holds a narrow encoder of width "
                                  f"{meta.get('width')}, but width={width} was requested")
    module, _ = build_encoder(meta["arch"], meta.get("width", 16))
    shapes = jax.eval_shape(_init_fn(module, tuple(int(s) for s in meta.get("image_shape", (32, 32, 3)))),
                            jax.random.PRNGKey(0))
    abstract = {"params": shapes["params"], "batch_stats": shapes["batch_stats"]}
    with ocp.StandardCheckpointer() as c:
        restored = c.restore(path / "variables", abstract)
    return EncoderBundle(module, {"params": restored["params"], "batch_stats": restored["batch_stats"]}, meta)


# ----------------------------------------------------------------------------------------------- data ---

def load_cifar10_20k(split: str = "train", data_dir=None):
    """The shared ``cifar10_jpeg_20k`` set, one split (``"train"``: the SSL pre-training set; ``"test"``: the
    downstream set): :func:`poisonjax.data.images.load_cifar10_20k_split`, which this delegates to."""
    from poisonjax.data.images import load_cifar10_20k_split
    return load_cifar10_20k_split(split, data_dir)
