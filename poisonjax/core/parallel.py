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
  :func:`jax.distributed.initialize` for multi-controller (SLURM, TPU pod, ``--coordinator``) runs;
  only process 0 writes results.
* Multi-process victim ensembles: :func:`victim_mesh` (one mesh over the devices of *all*
  processes), :func:`shard_leading` / :func:`host_local_to_global` (host numpy arrays -> global
  ``jax.Array`` objects split over that mesh, each process holding only its rows) and
  :func:`gather_to_host` (a global result back to numpy on every process, through
  :func:`jax.experimental.multihost_utils.process_allgather`). A jitted ``chunked_vmap(fn,
  mesh=victim_mesh())`` applied to :func:`shard_leading` inputs trains each process's victims on its
  own devices; :func:`gather_to_host` returns every victim's metrics to every process (process 0
  writes them).
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
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
    :math:`\lceil V/C \rceil C`, reshaped to ``[ceil(V/C), C, ...]`` and processed by
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
    Cross-process collectives of the CPU backend need an implementation: unless one was chosen
    (``JAX_CPU_COLLECTIVES_IMPLEMENTATION`` or ``jax.config``), ``gloo`` is selected first (it only
    affects CPU devices). Returns True when the runtime is (now) initialised.
    """
    global _DISTRIBUTED_STARTED
    if not enabled:
        return False
    if _DISTRIBUTED_STARTED:
        return True
    _cpu_collectives()
    jax.distributed.initialize(**kwargs)
    _DISTRIBUTED_STARTED = True
    log.info("jax.distributed started: process %d of %d, %d global devices",
             jax.process_index(), jax.process_count(), jax.device_count())
    return True


def is_main_process() -> bool:
    """True on process 0 (the only one that writes results, plots and reports)."""
    return jax.process_index() == 0


def _cpu_collectives():
    """Select gloo for the CPU backend's cross-process collectives unless the user chose one."""
    try:
        current = jax.config.jax_cpu_collectives_implementation
    except AttributeError:  # an older/newer jax without the option
        return
    if current in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def victim_mesh(axis_name: str = "victims") -> Optional[jax.sharding.Mesh]:
    """A 1-D mesh named ``axis_name`` over every device of every process, or ``None`` when there is
    only one device (then a plain ``vmap`` is used). After :func:`initialize_distributed` the mesh
    spans all processes, so victims mapped with ``chunked_vmap(..., mesh=victim_mesh())`` are split
    across hosts as well as across each host's devices."""
    return make_mesh(axis_name) if jax.device_count() > 1 else None


def _rows_of_this_process(sharding: NamedSharding, shape) -> slice:
    """The contiguous block of leading-axis rows of a leading-axis-sharded global ``shape`` held
    by this process's devices."""
    idx = sharding.addressable_devices_indices_map(tuple(shape)).values()
    blocks = sorted({(i[0].start or 0, shape[0] if i[0].stop is None else i[0].stop) for i in idx})
    start, stop = blocks[0][0], blocks[-1][1]
    if sum(b - a for a, b in blocks) != stop - start:
        raise ValueError(f"this process's rows {blocks} are not one contiguous block; "
                         "use a mesh whose devices are ordered by process (make_mesh)")
    return slice(start, stop)


def host_local_to_global(local_tree, mesh: jax.sharding.Mesh, global_rows: int,
                         axis_name: Optional[str] = None):
    """Per-process blocks -> global arrays split over ``mesh`` along their leading axis.

    Each process passes only *its* rows ``[n_p, ...]`` of every leaf (the block
    :func:`process_rows` names, ``n_p = global_rows / process_count`` with the devices of
    :func:`make_mesh`); the result is one global ``jax.Array`` per leaf of shape
    ``[global_rows, ...]`` with ``NamedSharding(mesh, P(axis_name))``
    (:func:`jax.make_array_from_process_local_data`). ``global_rows`` must be a multiple of the mesh
    size. In a single process this is ``jax.device_put`` with that sharding."""
    axis_name = axis_name or mesh.axis_names[0]
    if global_rows % mesh.shape[axis_name]:
        raise ValueError(f"global_rows={global_rows} must be a multiple of the {mesh.shape[axis_name]} devices "
                         f"of mesh axis {axis_name!r}")
    sharding = NamedSharding(mesh, P(axis_name))

    def one(local):
        local = np.asarray(local)
        shape = (global_rows,) + local.shape[1:]
        rows = _rows_of_this_process(sharding, shape)
        if local.shape[0] != rows.stop - rows.start:
            raise ValueError(f"this process holds rows {rows.start}:{rows.stop} of {global_rows}; "
                             f"got a block of {local.shape[0]}")
        return jax.make_array_from_process_local_data(sharding, local, shape)

    return jax.tree.map(one, local_tree)


def process_rows(mesh: jax.sharding.Mesh, global_rows: int, axis_name: Optional[str] = None) -> slice:
    """The leading-axis rows ``start:stop`` that this process holds of a ``[global_rows, ...]`` array
    split over ``mesh`` (all rows in a single process)."""
    axis_name = axis_name or mesh.axis_names[0]
    return _rows_of_this_process(NamedSharding(mesh, P(axis_name)), (global_rows,))


def shard_leading(tree, mesh: Optional[jax.sharding.Mesh], axis_name: Optional[str] = None):
    """Host arrays that every process holds in full (same seeds, same data) -> global arrays split
    over ``mesh`` along the leading axis; each process keeps only its own rows on its devices.

    The leading size :math:`V` is padded to a multiple of the mesh size by repeating the last row
    (as :func:`sharded_vmap` does); pass the result of a mapped function through
    :func:`gather_to_host` and keep its first :math:`V` rows. With ``mesh=None`` the leaves are
    returned unchanged (as ``jnp`` arrays).

    Returns:
      ``(tree of global arrays [V_padded, ...], V)``.
    """
    leaves = jax.tree.leaves(tree)
    sizes = {np.shape(l)[0] for l in leaves}
    if len(sizes) != 1:
        raise ValueError(f"shard_leading: leaves must share one leading size, got {sorted(sizes)}")
    v = sizes.pop()
    if mesh is None:
        return jax.tree.map(jnp.asarray, tree), v
    axis_name = axis_name or mesh.axis_names[0]
    ndev = mesh.shape[axis_name]
    vp = -(-v // ndev) * ndev
    rows = process_rows(mesh, vp, axis_name)

    def local(l):
        l = np.asarray(l)
        if vp > v:
            l = np.concatenate([l, np.repeat(l[-1:], vp - v, axis=0)], axis=0)
        return l[rows]

    return host_local_to_global(jax.tree.map(local, tree), mesh, vp, axis_name), v


def gather_to_host(tree, rows: Optional[int] = None):
    """Every leaf as a NumPy array on every process: arrays split over devices of several
    processes are all-gathered (:func:`jax.experimental.multihost_utils.process_allgather`, tiled),
    the rest fetched with :func:`jax.device_get`. ``rows``: keep only the first ``rows`` entries of
    the leading axis (drops :func:`shard_leading`'s padding)."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            from jax.experimental import multihost_utils
            x = multihost_utils.process_allgather(x, tiled=True)
        x = np.asarray(jax.device_get(x))
        return x if rows is None else x[:rows]
    return jax.tree.map(one, tree)
