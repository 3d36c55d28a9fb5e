r"""Devices: meshes, sharding a leading "clients"/"victims" axis, multi-host start.

* :func:`make_mesh` -- a 1-D :func:`jax.make_mesh` over all (or ``n``) devices.
* :func:`sharded_vmap` -- ``vmap(fn)`` over the leading axis of the mapped arguments, with that axis
  split across the mesh by :func:`jax.shard_map` (each device vmaps over its own block). The leading
  axis is padded to a multiple of the device count (by repeating the last element) and trimmed after,
  so any N works. The result equals ``jax.vmap(fn)`` (tested on 8 fake CPU devices).
* :func:`chunked_vmap` -- THE way to map a function over a leading axis (victims, trials, clients,
  parties): ``chunk`` elements at a time (``lax.map`` over vmapped chunks, bounding memory), each chunk
  optionally sharded over a mesh with :func:`sharded_vmap`. Every room uses it instead of its own
  pad/reshape/``lax.map`` code.
* :func:`initialize_distributed` / :func:`is_main_process` -- guarded
  :func:`jax.distributed.initialize` for multi-controller (SLURM, TPU pod) runs; only process 0
  writes results.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)
_DISTRIBUTED_STARTED = False


def make_mesh(axis_name: str = "clients", num_devices: Optional[int] = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``axis_name`` over the first ``num_devices`` devices (all by default)."""
    n = jax.device_count() if num_devices is None else int(num_devices)
    if n < 1 or n > jax.device_count():
        raise ValueError(f"num_devices must be in [1, {jax.device_count()}], got {num_devices}")
    try:
        return jax.make_mesh((n,), (axis_name,), axis_types=(jax.sharding.AxisType.Auto,),
                             devices=jax.devices()[:n])
    except TypeError:  # older signatures
        return jax.sharding.Mesh(np.array(jax.devices()[:n]), (axis_name,))


def _pad_leading(x, multiple):
    n = x.shape[0]
    pad = (-n) % multiple
    if pad == 0:
        return x
    return jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)


def sharded_vmap(fn: Callable, mesh: Optional[jax.sharding.Mesh] = None,
                 in_axes: Sequence[Optional[int]] | int = 0, axis_name: Optional[str] = None) -> Callable:
    """``vmap(fn, in_axes)`` whose mapped axis is sharded over ``mesh`` with :func:`jax.shard_map`.

    Args:
      fn: per-element function.
      mesh: a 1-D mesh (default :func:`make_mesh` over all devices). With one device this is
        exactly ``jax.vmap(fn)``.
      in_axes: ``0`` (map every argument) or a tuple with ``0``/``None`` per positional argument;
        ``None`` arguments are broadcast (replicated on every device).
      axis_name: mesh axis to shard over (the mesh's only axis by default).

    Returns:
      A function with the same signature returning outputs with a leading mapped axis of the
      original (unpadded) size.
    """
    mesh = make_mesh() if mesh is None else mesh
    axis_name = axis_name or mesh.axis_names[0]
    ndev = mesh.shape[axis_name]

    @functools.wraps(fn)
    def wrapped(*args):
        axes = (in_axes,) * len(args) if isinstance(in_axes, int) or in_axes is None else tuple(in_axes)
        if len(axes) != len(args):
            raise ValueError(f"in_axes has {len(axes)} entries for {len(args)} arguments")
        vm = jax.vmap(fn, in_axes=axes)
        if ndev == 1:
            return vm(*args)
        sizes = {l.shape[0] for a, ax in zip(args, axes) if ax == 0 for l in jax.tree.leaves(a)}
        if len(sizes) != 1:
            raise ValueError(f"mapped arguments must share one leading size, got {sorted(sizes)}")
        n = sizes.pop()
        padded = [jax.tree.map(lambda l: _pad_leading(l, ndev), a) if ax == 0 else a
                  for a, ax in zip(args, axes)]
        specs = tuple(jax.tree.map(lambda _: P(axis_name), a) if ax == 0 else jax.tree.map(lambda _: P(), a)
                      for a, ax in zip(padded, axes))
        # check_vma=False: per-client scans start from replicated constants (optimiser state) and
        # become device-varying, which the varying-axes checker would reject for lax.scan carries.
        out = jax.shard_map(vm, mesh=mesh, in_specs=specs, out_specs=P(axis_name), check_vma=False)(*padded)
        return jax.tree.map(lambda l: l[:n], out)

    return wrapped


def _check_chunk(chunk):
    if chunk is not None and (isinstance(chunk, bool) or int(chunk) != chunk or int(chunk) < 1):
        raise ValueError(f"chunk must be a positive int or None, got {chunk!r}")
    return None if chunk is None else int(chunk)


def chunked_vmap(fn: Callable, chunk: Optional[int] = None, mesh: Optional[jax.sharding.Mesh] = None,
                 in_axes: Sequence[Optional[int]] | int = 0) -> Callable:
    r"""``vmap(fn, in_axes)`` over a leading axis of size :math:`V`, ``chunk`` elements at a time,
    optionally sharded over ``mesh``.

    With :math:`C` = ``chunk`` the :math:`V` mapped elements are padded (by repeating the last one) to
    :math:`\lceil V/C ceil C`, reshaped to ``[ceil(V/C), C, ...]`` and processed by
    :func:`jax.lax.map` over the chunks, each chunk one ``vmap`` (sharded over the mesh's devices by
    :func:`sharded_vmap` when ``mesh`` has more than one device). Peak memory is that of :math:`C`
    elements; the result is trimmed back to :math:`V` rows and equals ``jax.vmap(fn)`` up to float
    reduction order (same programs per element, tested chunked == unchunked, sharded == unsharded).

    Args:
      fn: per-element function ``fn(*args)``.
      chunk: elements per chunk; ``None`` (or ``>= V``) maps everything in one ``vmap``.
      mesh: optional 1-D mesh (:func:`make_mesh`); ``None`` means no sharding (plain ``vmap``).
      in_axes: ``0`` (map every argument) or one ``0``/``None`` per positional argument;
        ``None`` arguments are broadcast to every element.

    Returns:
      ``wrapped(*args)`` whose outputs have a leading axis of size :math:`V`.
    """
    chunk = _check_chunk(chunk)

    @functools.wraps(fn)
    def wrapped(*args):
        axes = (in_axes,) * len(args) if isinstance(in_axes, int) or in_axes is None else tuple(in_axes)
        if len(axes) != len(args):
            raise ValueError(f"in_axes has {len(axes)} entries for {len(args)} arguments")
        if all(ax is None for ax in axes):
            raise ValueError("chunked_vmap needs at least one mapped argument (in_axes entry 0)")
        sizes = {l.shape[0] for a, ax in zip(args, axes) if ax == 0 for l in jax.tree.leaves(a)}
        if len(sizes) != 1:
            raise ValueError(f"mapped arguments must share one leading size, got {sorted(sizes)}")
        v = sizes.pop()
        inner = (jax.vmap(fn, in_axes=axes) if mesh is None or mesh.size == 1
                 else sharded_vmap(fn, mesh, in_axes=axes))
        if chunk is None or chunk >= v:
            return inner(*args)
        mapped_idx = [i for i, ax in enumerate(axes) if ax == 0]
        blocks = tuple(jax.tree.map(lambda l: _pad_leading(l, chunk).reshape((-1, chunk) + l.shape[1:]), args[i])
                       for i in mapped_idx)

        def one(blk):
            full = list(args)
            for i, b in zip(mapped_idx, blk):
                full[i] = b
            return inner(*full)

        out = jax.lax.map(one, blocks)
        return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:])[:v], out)

    return wrapped


def initialize_distributed(enabled: bool = True, **kwargs) -> bool:
    """Start JAX's multi-controller runtime (``jax.distributed.initialize``) once, if ``enabled``.

    On SLURM and Cloud TPU the coordinator address, process count and id are detected from the
    environment; pass ``coordinator_address=``, ``num_processes=``, ``process_id=`` otherwise.
    Returns True when the runtime is (now) initialised.
    """
    global _DISTRIBUTED_STARTED
    if not enabled:
        return False
    if _DISTRIBUTED_STARTED:
        return True
    jax.distributed.initialize(**kwargs)
    _DISTRIBUTED_STARTED = True
    log.info("jax.distributed started: process %d of %d, %d global devices",
             jax.process_index(), jax.process_count(), jax.device_count())
    return True


def is_main_process() -> bool:
    """True on process 0 (the only one that writes results, plots and reports)."""
    return jax.process_index() == 0
