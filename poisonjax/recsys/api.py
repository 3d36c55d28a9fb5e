r"""One-call DDSP (fake-user injection) on your own sequence file or list (numpy in, numpy out).

::

    import poisonjax.recsys as pr
    fakes = pr.ddsp_attack("my_data.txt", target_item=1234, n_fake=50)      # list of [T_j] int arrays
    pr.write_sequences("poisoned.txt", fakes, first_user=100_000)          # append to your training file

Input ``sequences``: a path to a text file in SASRec's format (one ``user item`` interaction per line,
grouped by user, in time order) or S3-Rec's (``user item_1 item_2 ...`` per line; detected from the
first line with more than two tokens), or a Python list of per-user item-id sequences. Item ids are
*your* ids (positive ints, any range); they are mapped to ``1..V`` internally and mapped back, so the
returned fake sequences use the same ids as the input. ``target_item`` is one of them.

What happens: (1) a surrogate sequential recommender (SASRec or GRU4Rec, ``model=``) is trained on each
user's training items (leave-one-out: the last two items of every user are held out, as the victims'
evaluation does, and never read by the attack); (2) the surrogate's user representations
:math:`h_u` and preferred items :math:`\Gamma_u` (top ``num_preferred`` per user) are read off
(:func:`poisonjax.recsys.attacks.build_surrogate`); (3) ``n_fake`` fake sequences are generated
(:func:`poisonjax.recsys.attacks.generate_fake`): DDSP's diversity-aware autoregressive generator
under the dual-promotion objective (see :mod:`poisonjax.recsys.attacks` for the math and which parts
are our reconstruction), or a baseline ``method`` (``"random"``, ``"popular"``, ``"bandwagon"``,
``"yue"``, ...). Fake lengths are drawn from the real users' lengths (``length=None``) or fixed.

For full control (several targets, K victims, HR/NDCG evaluation) use ``poisonjax run ddsp`` or the
building blocks in :mod:`poisonjax.recsys.attacks` and :mod:`poisonjax.recsys.training`.
"""
from __future__ import annotations

import os
import warnings
from typing import List, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_positive_int

__all__ = ["ddsp_attack", "read_sequences", "write_sequences"]


def read_sequences(sequences) -> tuple:
    """``(user_ids [U], list of int64 item-id arrays)`` from a SASRec/S3-Rec text file path or a list of
    sequences (see the module doc). Ids are returned as given (no remapping)."""
    from poisonjax.data.sequences import parse_interaction_per_line, parse_user_per_line
    if isinstance(sequences, (str, os.PathLike)):
        path = os.fspath(sequences)
        if not os.path.isfile(path):
            raise PoisonJaxInputError(f"sequences: no such file {path!r} (expected a SASRec 'user item' per line "
                                      "text file, or a list of item-id sequences)")
        with open(path) as f:
            lines = f.read().splitlines()
        per_user = any(len(ln.split()) > 2 for ln in lines)
        parse = parse_user_per_line if per_user else parse_interaction_per_line
        users, seqs = parse(lines, None, source=os.path.basename(path))
        return users, [np.asarray(s, np.int64) for s in seqs]
    try:
        seqs = [np.asarray(s) for s in sequences]
    except TypeError:
        raise PoisonJaxInputError(f"sequences must be a file path or a list of item-id sequences, "
                                  f"got {type(sequences).__name__}") from None
    for i, s in enumerate(seqs):
        if s.ndim != 1 or s.size == 0 or s.dtype.kind not in "iu" or s.min() <= 0:
            raise PoisonJaxInputError(f"sequences[{i}] must be a non-empty 1-D sequence of positive integer item ids, "
                                      f"got shape {s.shape} dtype {s.dtype}")
    if not seqs:
        raise PoisonJaxInputError("sequences is empty")
    return np.arange(1, len(seqs) + 1, dtype=np.int64), [s.astype(np.int64) for s in seqs]


def write_sequences(path, sequences: Sequence[np.ndarray], first_user: int = 1) -> None:
    """Write sequences in SASRec's format (``user item`` per line), users numbered from ``first_user``."""
    with open(path, "w") as f:
        for u, s in enumerate(sequences, start=int(first_user)):
            for it in np.asarray(s).tolist():
                f.write(f"{u} {it}\n")


def ddsp_attack(sequences: Union[str, os.PathLike, Sequence[Sequence[int]]], target_item: int,
                n_fake: Union[int, float], *, length: Optional[int] = None, method: str = "ddsp",
                model: str = "sasrec", max_len: int = 50, hidden: int = 64, num_blocks: int = 2, num_heads: int = 1,
                dropout: float = 0.2, epochs: int = 20, batch_size: int = 128, lr: float = 1e-3,
                num_preferred: int = 10, seed: int = 0, **generator_kwargs) -> List[np.ndarray]:
    r"""DDSP (Zhao et al., SIGIR 2025) in one call: ``n_fake`` fake user sequences promoting ``target_item``.

    Args:
      sequences: a SASRec/S3-Rec text file or a list of item-id sequences (module doc); users with fewer
        than 3 items cannot be split for the surrogate and are left out of its training (with a warning).
      target_item: the item to promote, an id that occurs in ``sequences``.
      n_fake: number of fake users (int >= 1), or a float in (0, 1): that fraction of the real users.
      length: fixed fake length (>= 2), or ``None``: each drawn from the real users' training lengths
        (clipped to ``2..max_len``), so a detector cannot tell fakes by length.
      method: ``"ddsp"`` (default) or another of :data:`poisonjax.recsys.attacks.METHODS`.
      model, max_len, hidden, num_blocks, num_heads, dropout, epochs, batch_size, lr: the surrogate SRS
        (:func:`poisonjax.recsys.models.make_model`) and its Adam training (BCE with one negative per
        position, as SASRec).
      num_preferred: :math:`|\Gamma_u|`, the preferred items per user in the dual-promotion objective.
      seed: PRNG seed of training and generation.
      **generator_kwargs: passed to :func:`poisonjax.recsys.attacks.surrogate_generate` (``alpha``,
        ``max_target_share``, ``num_candidates``, ...).

    Returns:
      list of ``n_fake`` int64 arrays ``[T_j]`` of item ids in the input's id space (no padding).
    """
    from poisonjax.data.sequences import item_popularity, leave_one_out
    from poisonjax.recsys import attacks as A
    from poisonjax.recsys.models import make_model
    from poisonjax.recsys.training import make_trainer
    check_choice("method", method, A.METHODS)
    _, raw = read_sequences(sequences)
    ids = np.unique(np.concatenate(raw))                         # original id of internal item k+1
    to_int = {int(v): k + 1 for k, v in enumerate(ids)}
    seqs = [np.asarray([to_int[int(v)] for v in s], np.int32) for s in raw]
    V = len(ids)
    if isinstance(target_item, bool) or not isinstance(target_item, (int, np.integer)) or int(target_item) not in to_int:
        raise PoisonJaxInputError(f"target_item must be an item id that occurs in sequences "
                                  f"(ids range {int(ids[0])}..{int(ids[-1])}), got {target_item!r}")
    target = to_int[int(target_item)]
    if isinstance(n_fake, float):
        if not 0.0 < n_fake < 1.0:
            raise PoisonJaxInputError(f"n_fake must be an int >= 1 or a float fraction in (0, 1), got {n_fake!r}")
        F = A.num_fake_users(len(seqs), n_fake)
    else:
        F = check_positive_int("n_fake", n_fake)
    max_len = check_positive_int("max_len", max_len)
    usable = [s for s in seqs if len(s) >= 3]
    if len(usable) < len(seqs):
        warnings.warn(f"{len(seqs) - len(usable)} users with fewer than 3 items are left out of the surrogate's "
                      "training (leave-one-out needs 3)", stacklevel=2)
    if len(usable) < 2:
        raise PoisonJaxInputError("sequences needs at least 2 users with 3 or more items to train a surrogate")
    split = leave_one_out(usable, max_len)
    train_seqs = [s[:-2] for s in usable]
    pop = item_popularity(train_seqs, V)
    if length is None:
        lengths = A.sample_lengths([len(s) for s in train_seqs], F, seed + 11, max_len)
        T = int(lengths.max())
    else:
        T = A.check_fake_length(length)
        lengths = None
    k_train, k_gen = jax.random.split(jax.random.PRNGKey(seed))
    sur = None
    if method not in ("random", "popular", "bandwagon", "repetition"):
        net = make_model(model, V, max_len, hidden, dropout, num_blocks, num_heads)
        trainer = make_trainer(net, V, epochs=int(epochs), batch_size=int(min(batch_size, len(usable))), lr=lr)
        params = trainer.train_single(jnp.asarray(split.train_x), jnp.asarray(split.train_y), k_train)
        sur = A.build_surrogate(net, params, *A.attacker_view(split), min(int(num_preferred), V - 1))
    fake = A.generate_fake(method, sur, target, F, T, k_gen, pop, lengths=lengths, **generator_kwargs)
    fake = A.mask_lengths(np.asarray(fake), lengths)
    out_ids = np.concatenate([[0], ids])
    return [out_ids[row[row > 0]].astype(np.int64) for row in fake]
