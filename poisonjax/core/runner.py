r"""Drive any :class:`~poisonjax.core.types.AttackOptimizer` to completion.

:func:`run` compiles one *chunk* function once -- a ``lax.scan`` of ``chunk_size`` calls to
``attack.step`` (steps past the end are skipped with ``lax.cond``, so the last, shorter chunk reuses
the same compiled code) -- and loops over chunks on the host. After each chunk it

* checks that the state and metrics are finite (a diverging optimisation raises
  :class:`DivergenceError` instead of returning NaN poisons),
* appends one JSON line per step to ``workdir/metrics.jsonl`` (process 0 only),
* advances a tqdm progress bar with ETA,
* saves the state with an orbax ``CheckpointManager`` every ``checkpoint_every`` steps.

Re-running with the same ``workdir`` restores the latest checkpoint and continues; since every step
is a pure function of the state, a run killed midway and resumed ends bit-identical to an
uninterrupted one. ``workdir/run_meta.json`` stores a fingerprint of ``config``; resuming with a
different config is refused. A checkpoint that cannot be read is reported (never overwritten).

On resume ``metrics.jsonl`` is cut back to the restored step, so every step appears exactly once
after the run ends (the steps done between the last checkpoint and a crash are recomputed, and their
old lines removed). A line that cannot be parsed is reported with a warning; only the *last* line
(a write cut short by the crash) is ever dropped, any other is kept as it is.

``host_loop=True`` calls ``attack.step`` once per step from Python instead of scanning it: for a
step that is a composition of separately compiled functions (the federated simulation compiles local
training once and shares it across a grid of aggregators), so only the cheap part recompiles per run.
Checkpoints, metrics, resume and divergence checks are the same in both modes.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.types import AttackOptimizer

log = logging.getLogger(__name__)


class DivergenceError(FloatingPointError):
    """The optimisation produced NaN/inf in its state or metrics."""


class CheckpointMismatchError(ValueError):
    """The workdir's checkpoint belongs to a different config/problem."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint exists but cannot be restored."""


class RunResult(NamedTuple):
    """Final ``state``, the list of per-step ``metrics`` dicts (this invocation's and, on resume,
    those already on disk), the number of ``steps`` done, ``resumed_from`` (step, or None), and
    ``seconds``: wall time of the steps run *in this invocation* (compilation of the first chunk and
    checkpoint writes included; restoring excluded), so ``seconds / (steps - (resumed_from or 0))``
    is a per-step time that stays right across resumes."""

    state: Any
    metrics: List[Dict[str, float]]
    steps: int
    resumed_from: Optional[int]
    seconds: float = 0.0


def config_fingerprint(config: Any) -> str:
    """sha256 of the JSON form of ``config`` (ConfigDicts, dicts, numbers, strings)."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _all_finite(tree) -> jax.Array:
    leaves = [l for l in jax.tree.leaves(tree)
              if hasattr(l, "dtype") and jnp.issubdtype(l.dtype, jnp.inexact)]
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(l)) for l in leaves]))


@functools.lru_cache(maxsize=64)
def make_chunk_fn(attack: AttackOptimizer, chunk_size: int):
    """Cached per ``(attack, chunk_size)``, so repeated :func:`run` calls with the same attack object
    reuse the compiled program.

    ``chunk(state, problem, n_active) -> (state, metrics[chunk_size], finite)``; jit-compiled once.

    Steps with index ``>= n_active`` are skipped (identity), so any remainder reuses the program.
    """
    def chunk(state, problem, n_active):
        def body(s, i):
            s2 = jax.lax.cond(i < n_active, lambda s_: attack.step(s_, problem), lambda s_: s_, s)
            m = attack.metrics(s2, problem) if attack.metrics is not None else {}
            return s2, m

        state, ms = jax.lax.scan(body, state, jnp.arange(chunk_size))
        return state, ms, _all_finite((state, ms))

    return jax.jit(chunk)


def _truncate_metrics(path: Path, start: int):
    """Lines of ``path`` to keep when resuming from step ``start``, and the parsed records among them.

    Records with ``step > start`` are removed (they are recomputed, so each step ends up written
    once). A line that is not valid JSON is reported with a :class:`RuntimeWarning`: the last line
    (cut short by a crash) is dropped, any other line is kept verbatim (never silently lost).
    """
    lines = [l for l in path.read_text().splitlines() if l.strip()]
    kept, history = [], []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            last = i == len(lines) - 1
            msg = (f"{path}: line {i + 1} is not valid JSON ({line[:60]!r}); "
                   + ("it is the last line (a write cut short), dropped" if last else "kept as it is"))
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            log.warning(msg)
            if not last:
                kept.append(line)
            continue
        if not isinstance(rec, dict) or rec.get("step", 0) <= start:
            kept.append(line)
            if isinstance(rec, dict):
                history.append(rec)
    return kept, history


def _host_chunk_fn(attack: AttackOptimizer):
    """The ``host_loop`` counterpart of :func:`make_chunk_fn`: ``attack.step`` called from Python
    ``n_active`` times (it compiles itself), ``attack.metrics`` jitted, metrics stacked per step."""
    metrics = jax.jit(attack.metrics) if attack.metrics is not None else (lambda s, p: {})

    def chunk(state, problem, n_active):
        ms = []
        for _ in range(int(n_active)):
            state = attack.step(state, problem)
            ms.append(metrics(state, problem))
        ms = jax.tree.map(lambda *xs: jnp.stack(xs), *ms) if ms and ms[0] else {}
        return state, ms, _all_finite((state, ms))

    return chunk


def _checkpoint_manager(ckpt_dir: Path, max_to_keep: int):
    import orbax.checkpoint as ocp
    opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(ckpt_dir.absolute(), options=opts)


def _write_meta(workdir: Path, fingerprint: str, steps: int) -> None:
    meta_path = workdir / "run_meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != fingerprint:
            raise CheckpointMismatchError(
                f"workdir {str(workdir)!r} holds a checkpoint of a different config "
                f"(fingerprint {meta.get('fingerprint', '?')[:12]} != {fingerprint[:12]}); "
                "use a new --workdir or delete the old one to start over")
    else:
        from poisonjax.core.parallel import is_main_process
        if is_main_process():  # multi-host: only process 0 writes files
            meta_path.write_text(json.dumps({"fingerprint": fingerprint, "steps": steps}))


def run(attack: AttackOptimizer, problem: Any, steps: int, workdir: Optional[str | os.PathLike] = None, *,
        key: Optional[jax.Array] = None, seed: int = 0, chunk_size: int = 10,
        checkpoint_every: Optional[int] = None, max_to_keep: int = 2, config: Any = None,
        progress: bool = True, desc: str = "attack", metrics_file: str = "metrics.jsonl",
        tensorboard: bool = False, host_loop: bool = False, save_final: bool = True,
        stop_when: Optional[Callable[[Any], bool]] = None) -> RunResult:
    """Run ``attack`` for ``steps`` steps on ``problem``, resumable from ``workdir``.

    Args:
      attack: ``AttackOptimizer(init, step[, metrics])``.
      problem: pytree of arrays (the attack's fixed inputs).
      steps: total number of steps (>= 0).
      workdir: where ``metrics.jsonl``, ``run_meta.json`` and ``checkpoints/`` live; ``None`` runs
        in memory without checkpoints.
      key: PRNG key for ``attack.init`` (default ``PRNGKey(seed)``).
      chunk_size: steps per compiled ``lax.scan`` chunk (one host round-trip per chunk).
      checkpoint_every: save every this many steps (rounded up to whole chunks; default: every chunk).
      max_to_keep: orbax checkpoints to keep.
      config: anything JSON-able identifying the run; a workdir created by another config is refused.
      progress: show a tqdm bar.
      tensorboard: also write the metrics as TensorBoard events under ``workdir/tb`` (needs the
        ``[tensorboard]`` extra, i.e. tensorboardX).
      host_loop: call ``attack.step`` from Python once per step (it must compile itself) instead of
        one compiled ``lax.scan`` per chunk; see the module docstring.
      save_final: also checkpoint the last step (so a rerun returns at once). A caller that stores the
        finished result itself (a study's cell cache) passes False and saves one checkpoint write.
      stop_when: optional ``stop_when(state) -> bool``, checked on the host after every chunk (and after a
        restore): True ends the run early (e.g. early stopping), checkpointed as a final step would be.

    Returns:
      :class:`RunResult`.

    Raises:
      DivergenceError: a non-finite value appeared in the state or metrics.
      CheckpointMismatchError: the workdir belongs to another config.
      CorruptCheckpointError: the latest checkpoint cannot be read.
    """
    from poisonjax.core.parallel import is_main_process

    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    steps = int(steps)
    key = jax.random.PRNGKey(seed) if key is None else key
    checkpoint_every = checkpoint_every or chunk_size

    state = (attack.init if host_loop else jax.jit(attack.init))(key, problem)
    start, resumed_from, manager = 0, None, None
    history: List[Dict[str, float]] = []
    wd = Path(workdir) if workdir is not None else None
    if wd is not None:
        wd.mkdir(parents=True, exist_ok=True)
        _write_meta(wd, config_fingerprint({"config": config, "steps_structure": str(jax.tree.structure(state))}), steps)
        manager = _checkpoint_manager(wd / "checkpoints", max_to_keep)
        latest = manager.latest_step()
        if latest is not None:
            import orbax.checkpoint as ocp
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
            if jax.process_count() > 1:  # multi-host: saved as NumPy (below), restored as NumPy
                abstract = jax.tree.map(np.asarray, state)
            try:
                state = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
                state = jax.tree.map(jnp.asarray, state) if jax.process_count() > 1 else state
            except Exception as e:  # noqa: BLE001 -- report any failure to read as corruption
                raise CorruptCheckpointError(
                    f"checkpoint at step {latest} in {str(wd / 'checkpoints')!r} cannot be restored "
                    f"({type(e).__name__}: {e}); it was left untouched -- delete it to start over") from e
            start = resumed_from = int(latest)
            log.info("resumed from step %d in %s", start, wd)
        mpath = wd / metrics_file
        if mpath.exists():
            kept, history = _truncate_metrics(mpath, start)
            if is_main_process():
                mpath.write_text("".join(l + "\n" for l in kept))

    if host_loop:
        chunk_fn = _host_chunk_fn(attack)
    else:
        try:
            chunk_fn = make_chunk_fn(attack, chunk_size)
        except TypeError:  # an unhashable attack object: compile without the cache
            chunk_fn = make_chunk_fn.__wrapped__(attack, chunk_size)
    tb = None
    if tensorboard and wd is not None and is_main_process():
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            raise ImportError("tensorboard=True needs tensorboardX: pip install 'poisonjax[tensorboard]'") from e
        tb = SummaryWriter(str(wd / "tb"))
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, initial=start, desc=desc, unit="step", dynamic_ncols=True, leave=False)
    done = start
    last_saved = start
    t_start = time.perf_counter()
    # stop_when is evaluated exactly once per state: before the first chunk (a restored state may already
    # be finished) and after each chunk
    stopping = stop_when is not None and done < steps and bool(stop_when(state))
    try:
        while done < steps and not stopping:
            n = min(chunk_size, steps - done)
            state, ms, finite = chunk_fn(state, problem, jnp.int32(n))
            ms = jax.device_get(ms)
            if not bool(finite):
                raise DivergenceError(
                    f"{desc}: non-finite values (NaN/inf) in the state or metrics between steps "
                    f"{done} and {done + n}; lower the step size or check the inputs")
            recs = []
            for i in range(n):
                rec = {"step": done + i + 1}
                rec.update({k: float(np.asarray(v)[i]) for k, v in ms.items()})
                recs.append(rec)
            history.extend(recs)
            done += n
            if wd is not None and is_main_process():
                with open(wd / metrics_file, "a") as f:
                    for r in recs:
                        f.write(json.dumps(r) + "\n")
            if tb is not None:
                for r in recs:
                    for k, v in r.items():
                        if k != "step":
                            tb.add_scalar(f"{desc}/{k}", v, r["step"])
            stopping = stop_when is not None and done < steps and bool(stop_when(state))
            if manager is not None and ((done - last_saved >= checkpoint_every and done < steps and not stopping)
                                        or ((done == steps or stopping) and save_final)):
                import orbax.checkpoint as ocp
                # multi-host: every process holds the same host-local state; orbax refuses host-local
                # jax.Arrays there, so it is saved as NumPy (written by process 0 only)
                manager.save(done, args=ocp.args.StandardSave(
                    state if jax.process_count() == 1 else jax.tree.map(np.asarray, state)))
                manager.wait_until_finished()
                last_saved = done
            if bar is not None:
                bar.update(n)
                if recs and len(recs[-1]) > 1:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in list(recs[-1].items())[1:4]})
    finally:
        if bar is not None:
            bar.close()
        if tb is not None:
            tb.close()
        if manager is not None:
            manager.wait_until_finished()
            manager.close()
    return RunResult(state, history, done, resumed_from, time.perf_counter() - t_start)
