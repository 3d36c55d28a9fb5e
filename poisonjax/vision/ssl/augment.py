r"""SimCLR's data augmentations in JAX (Chen et al., "A simple framework for contrastive learning of visual
representations", ICML 2020, Appendix A), one image at a time and ``jax.vmap``-ed over a batch.

For one image :math:`x \in [0, 1]^{H \times W \times 3}` a view is, in this order:

1. **random resized crop** -- a box of area :math:`s \cdot HW`, :math:`s \sim U[s_0, 1]` (``scale``, default
   :math:`s_0 = 0.2`, the usual CIFAR setting; ImageNet uses 0.08) and aspect ratio :math:`r` with
   :math:`\log r \sim U[\log 3/4, \log 4/3]`, placed uniformly, resized back to :math:`H \times W` by bilinear
   interpolation. Simplification: one draw clipped to the image instead of torchvision's 10 rejection retries.
2. **horizontal flip** with probability 1/2.
3. **colour jitter** with probability ``p_jitter = 0.8``: brightness :math:`x \leftarrow b x`, contrast
   :math:`x \leftarrow \bar g + c (x - \bar g)` (:math:`\bar g` the mean grey level), saturation
   :math:`x \leftarrow g + s (x - g)` (:math:`g` the per-pixel grey level, ITU-R 601 weights), with
   :math:`b, c, s \sim U[1 - 0.4, 1 + 0.4]`, and hue :math:`h \leftarrow h + \delta \bmod 1`,
   :math:`\delta \sim U[-0.1, 0.1]` in HSV; clipped to [0, 1] after each. Simplification: a fixed order
   (torchvision draws a random order of the four).
4. **random grayscale** with probability ``p_gray = 0.2`` (grey level replicated on the 3 channels).

No Gaussian blur (SimCLR drops it on CIFAR-10). Every random choice comes from the explicit key, so a
view is a pure function of ``(key, image)``. The crop/flip of the supervised victims is
:func:`poisonjax.vision.backdoor.victim.augment_batch` (zero-padded shift crop); this module adds the scale
and colour augmentations contrastive learning needs.
"""
from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

_GREY = jnp.array([0.299, 0.587, 0.114], jnp.float32)


def grey(x: jax.Array) -> jax.Array:
    """Per-pixel grey level ``[H, W, 1]`` of an RGB image ``[H, W, 3]`` (ITU-R 601 luma weights)."""
    return (x @ _GREY)[..., None]


def rgb_to_hsv(x: jax.Array) -> jax.Array:
    """RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of a turn), elementwise over ``[..., 3]``."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx, mn = jnp.max(x, -1), jnp.min(x, -1)
    d = mx - mn
    safe = jnp.where(d > 0, d, 1.0)
    h = jnp.where(mx == r, (g - b) / safe % 6.0, jnp.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    h = jnp.where(d > 0, h / 6.0, 0.0)
    s = jnp.where(mx > 0, d / jnp.where(mx > 0, mx, 1.0), 0.0)
    return jnp.stack([h, s, mx], -1)


def hsv_to_rgb(x: jax.Array) -> jax.Array:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = x[..., 0], x[..., 1], x[..., 2]
    i = jnp.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(jnp.int32) % 6
    r = jnp.choose(i, [v, q, p, p, t, v], mode="clip")
    g = jnp.choose(i, [t, v, v, q, p, p], mode="clip")
    b = jnp.choose(i, [p, p, t, v, v, q], mode="clip")
    return jnp.stack([r, g, b], -1)


def random_resized_crop(key: jax.Array, x: jax.Array, scale: Tuple[float, float] = (0.2, 1.0),
                        ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> jax.Array:
    """Crop a random box (area fraction in ``scale``, aspect ratio in ``ratio``) of ``x [H, W, C]`` and resize
    it bilinearly back to ``[H, W, C]``."""
    h, w, _ = x.shape
    ka, kr, ky, kx = jax.random.split(key, 4)
    area = jax.random.uniform(ka, (), minval=scale[0], maxval=scale[1]) * h * w
    r = jnp.exp(jax.random.uniform(kr, (), minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1])))
    cw = jnp.clip(jnp.sqrt(area * r), 1.0, w)
    ch = jnp.clip(jnp.sqrt(area / r), 1.0, h)
    y0 = jax.random.uniform(ky, ()) * (h - ch)
    x0 = jax.random.uniform(kx, ()) * (w - cw)
    ys = y0 + (jnp.arange(h) + 0.5) * ch / h - 0.5
    xs = x0 + (jnp.arange(w) + 0.5) * cw / w - 0.5
    yy, xx = jnp.meshgrid(ys, xs, indexing="ij")
    sample = lambda c: jax.scipy.ndimage.map_coordinates(c, [yy, xx], order=1, mode="nearest")
    return jax.vmap(sample, in_axes=-1, out_axes=-1)(x)


def color_jitter(key: jax.Array, x: jax.Array, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.1) -> jax.Array:
    """Brightness, contrast, saturation and hue jitter of one RGB image (see the module docstring)."""
    kb, kc, ks, kh = jax.random.split(key, 4)
    u = lambda k, a: jax.random.uniform(k, (), minval=1.0 - a, maxval=1.0 + a)
    x = jnp.clip(x * u(kb, brightness), 0.0, 1.0)
    m = jnp.mean(grey(x))
    x = jnp.clip(m + u(kc, contrast) * (x - m), 0.0, 1.0)
    g = grey(x)
    x = jnp.clip(g + u(ks, saturation) * (x - g), 0.0, 1.0)
    hsv = rgb_to_hsv(x)
    dh = jax.random.uniform(kh, (), minval=-hue, maxval=hue)
    hsv = hsv.at[..., 0].set((hsv[..., 0] + dh) % 1.0)
    return jnp.clip(hsv_to_rgb(hsv), 0.0, 1.0)


def simclr_view(key: jax.Array, x: jax.Array, *, scale: Tuple[float, float] = (0.2, 1.0),
                p_jitter: float = 0.8, p_gray: float = 0.2, strength: float = 1.0) -> jax.Array:
    """One SimCLR view of one image ``x [H, W, 3]`` in [0, 1] -> ``[H, W, 3]`` in [0, 1].

    ``strength`` scales the colour-jitter magnitudes (0.4, 0.4, 0.4, 0.1) as SimCLR's ``s``."""
    kc, kf, kj, kja, kg = jax.random.split(key, 5)
    v = random_resized_crop(kc, x, scale)
    v = jnp.where(jax.random.bernoulli(kf, 0.5), v[:, ::-1], v)
    jit_v = color_jitter(kj, v, 0.4 * strength, 0.4 * strength, 0.4 * strength, 0.1 * strength)
    v = jnp.where(jax.random.bernoulli(kja, p_jitter), jit_v, v)
    v = jnp.where(jax.random.bernoulli(kg, p_gray), jnp.broadcast_to(grey(v), v.shape), v)
    return v


def simclr_views(key: jax.Array, x: jax.Array, **kw) -> Tuple[jax.Array, jax.Array]:
    """Two independent SimCLR views of every image of a batch ``x [B, H, W, 3]``: ``(v1, v2)``, each
    ``[B, H, W, 3]`` in [0, 1] (per-image keys, ``vmap``-ed)."""
    b = x.shape[0]
    k1, k2 = jax.random.split(key)
    view = jax.vmap(lambda k, im: simclr_view(k, im, **kw))
    return view(jax.random.split(k1, b), x), view(jax.random.split(k2, b), x)
