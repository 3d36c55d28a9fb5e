r"""Sequential-recommendation data: loaders, k-core filtering, leave-one-out splits, padding.

Formats (both 1-based ids, items in time order; 0 is reserved for padding):

* **S3-Rec / ICLRec** ``Beauty.txt`` -- one line per user: ``user item_1 item_2 ... item_n``.
* **SASRec** ``Video.txt`` -- one interaction per line: ``user item`` (lines grouped by user).

Protocol (SASRec, Kang & McAuley ICDM 2018; S3-Rec, Zhou et al. CIKM 2020): for a user sequence
:math:`s = (i_1, \dots, i_n)` the last item :math:`i_n` is the test target, :math:`i_{n-1}` the
validation target and :math:`(i_1..i_{n-2})` the training sequence, trained as next-item prediction
(inputs :math:`i_1..i_{n-3}`, positives :math:`i_2..i_{n-2}`).

k-core filtering repeatedly drops users with fewer than ``k`` interactions and items with fewer
than ``k`` interactions until both conditions hold, then re-numbers items ``1..V`` by first
appearance order of their old id (ascending), keeping :attr:`SequenceDataset.item_ids` as the map
back to the file's ids.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.data._base import require

#: file locations under the data root, and the counts stated in each folder's PROVENANCE.md
DATASETS: Dict[str, dict] = {
    "beauty": dict(path="amazon_beauty_s3rec/Beauty.txt", fmt="user_per_line",
                   users=22363, items=12101, interactions=198502),
    "video": dict(path="sasrec_amazon_video/Video.txt", fmt="interaction_per_line",
                  users=31013, items=23715, interactions=287107),
}


@dataclasses.dataclass
class SequenceDataset:
    """Per-user item sequences with contiguous item ids ``1..num_items`` (0 = padding).

    Attributes:
      sequences: list of ``int32`` arrays, one per user, items in time order.
      num_items: ``V``.
      item_ids: ``[V + 1]`` original (file) id of each item; ``item_ids[0] = 0``.
      user_ids: ``[U]`` original user id of each sequence.
      name: dataset name.
    """

    sequences: List[np.ndarray]
    num_items: int
    item_ids: np.ndarray
    user_ids: np.ndarray
    name: str = ""
    file_num_items: int = 0       # largest item id in the file (0 = unknown)

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.sequences], np.int64)

    def popularity(self) -> np.ndarray:
        """``[V + 1]`` interaction count of each item (index 0 = padding = 0)."""
        return item_popularity(self.sequences, self.num_items)

    def map_item(self, original_id: int) -> int:
        """Internal id of a file item id; raises if k-core filtering (or the subset) removed it."""
        hit = np.nonzero(self.item_ids == int(original_id))[0]
        if self.file_num_items and not 1 <= int(original_id) <= self.file_num_items:
            raise PoisonJaxInputError(f"target item {original_id} is outside the catalog of {self.name or 'the dataset'}: "
                                      f"expected a file item id in 1..{self.file_num_items}")
        if original_id == 0 or hit.size == 0:
            raise PoisonJaxInputError(
                f"target item {original_id} (file id) is not in the filtered {self.name or 'dataset'}: "
                f"k-core filtering or user subsampling removed it; pick a target among the "
                f"{self.num_items} remaining items")
        return int(hit[0])


def item_popularity(sequences: Sequence[np.ndarray], num_items: int) -> np.ndarray:
    """``[num_items + 1]`` counts of each item id over all sequences."""
    flat = np.concatenate([np.asarray(s, np.int64) for s in sequences]) if len(sequences) else np.zeros(0, np.int64)
    return np.bincount(flat, minlength=num_items + 1)[: num_items + 1]


# ------------------------------------------------------------------------------------ parsing ----

def _parse_int(tok: str) -> Optional[int]:
    try:
        v = int(tok)
    except ValueError:
        return None
    return v


def parse_user_per_line(lines: Sequence[str], num_items: Optional[int] = None, source: str = "input"):
    """Parse S3-Rec lines ``user item_1 ... item_n``.

    Args:
      lines: text lines (line numbers in errors are 1-based positions in ``lines``).
      num_items: catalog size; item ids must lie in ``1..num_items`` (any positive id if ``None``).
      source: file name used in error messages.

    Returns:
      ``(user_ids [U], sequences list)``.

    Raises:
      PoisonJaxInputError: listing every line holding an unknown item id (non-integer, ``<= 0`` or
        ``> num_items``) or a line with no items.
    """
    users, seqs, bad = [], [], []
    for ln, line in enumerate(lines, start=1):
        toks = line.split()
        if not toks:
            continue
        vals = [_parse_int(t) for t in toks]
        items = vals[1:]
        wrong = [toks[j + 1] for j, v in enumerate(items) if v is None or v <= 0 or (num_items is not None and v > num_items)]
        if vals[0] is None or not items or wrong:
            bad.append((ln, wrong if wrong else toks[:1]))
            continue
        users.append(vals[0])
        seqs.append(np.asarray(items, np.int32))
    if bad:
        raise PoisonJaxInputError(_unknown_msg(source, bad, num_items))
    return np.asarray(users, np.int64), seqs


def parse_interaction_per_line(lines: Sequence[str], num_items: Optional[int] = None, source: str = "input"):
    """Parse SASRec lines ``user item`` (grouped by user, in time order) into per-user sequences.

    Returns ``(user_ids [U], sequences)`` in order of first appearance of each user. Raises
    :class:`PoisonJaxInputError` listing the line numbers of malformed lines or unknown item ids.
    """
    order: Dict[int, List[int]] = {}
    bad = []
    for ln, line in enumerate(lines, start=1):
        toks = line.split()
        if not toks:
            continue
        if len(toks) < 2:
            bad.append((ln, toks))
            continue
        u, i = _parse_int(toks[0]), _parse_int(toks[1])
        if u is None or i is None or i <= 0 or (num_items is not None and i > num_items):
            bad.append((ln, [toks[1]]))
            continue
        order.setdefault(u, []).append(i)
    if bad:
        raise PoisonJaxInputError(_unknown_msg(source, bad, num_items))
    users = np.asarray(list(order.keys()), np.int64)
    return users, [np.asarray(v, np.int32) for v in order.values()]


def _unknown_msg(source, bad, num_items):
    rng = f"1..{num_items}" if num_items is not None else "positive integers"
    shown = "; ".join(f"line {ln}: {' '.join(map(str, toks))}" for ln, toks in bad[:20])
    more = f" (and {len(bad) - 20} more lines)" if len(bad) > 20 else ""
    return (f"{source}: {len(bad)} line(s) hold unknown or malformed item ids (expected item ids in {rng}): "
            f"{shown}{more}")


def check_sequences(name: str, sequences: Sequence[Sequence[int]], num_items: int) -> None:
    """Raise :class:`PoisonJaxInputError` naming every sequence (1-based line number) that holds an
    item id outside ``1..num_items`` (e.g. fake sequences before injection)."""
    bad = []
    for ln, s in enumerate(sequences, start=1):
        a = np.asarray(s)
        wrong = a[(a < 1) | (a > num_items)]
        if wrong.size:
            bad.append((ln, wrong[:5].tolist()))
    if bad:
        raise PoisonJaxInputError(_unknown_msg(name, bad, num_items))


# --------------------------------------------------------------------------------- filtering ----

def k_core(sequences: Sequence[np.ndarray], k: int = 5, user_ids: Optional[np.ndarray] = None):
    """Iterative k-core: drop users and items with fewer than ``k`` interactions until stable.

    Returns ``(sequences, item_ids, user_ids)`` with items re-numbered ``1..V`` (ascending old id);
    ``item_ids[new] = old`` with ``item_ids[0] = 0``.
    """
    seqs = [np.asarray(s, np.int64) for s in sequences]
    uids = np.arange(1, len(seqs) + 1) if user_ids is None else np.asarray(user_ids)
    while True:
        max_id = max((int(s.max()) for s in seqs if s.size), default=0)
        cnt = np.bincount(np.concatenate(seqs) if seqs else np.zeros(0, np.int64), minlength=max_id + 1)
        keep_item = cnt >= k
        new = [s[keep_item[s]] for s in seqs]
        keep_user = np.array([len(s) >= k for s in new], bool)
        changed = any(len(a) != len(b) for a, b in zip(new, seqs)) or not keep_user.all()
        seqs = [s for s, m in zip(new, keep_user) if m]
        uids = uids[keep_user]
        if not changed:
            break
    return _renumber(seqs, uids)


def _renumber(seqs, uids):
    used = np.unique(np.concatenate(seqs)) if seqs else np.zeros(0, np.int64)
    lut = np.zeros(int(used.max()) + 1 if used.size else 1, np.int64)
    lut[used] = np.arange(1, used.size + 1)
    item_ids = np.concatenate([[0], used]).astype(np.int64)
    return [lut[s].astype(np.int32) for s in seqs], item_ids, uids


def subsample_users(sequences, user_ids, num_users: int, seed: int = 0):
    """A reproducible random subset of ``num_users`` users (numpy ``default_rng(seed)``), kept in
    their original order."""
    n = len(sequences)
    if num_users >= n:
        return list(sequences), np.asarray(user_ids)
    idx = np.sort(np.random.default_rng(seed).choice(n, num_users, replace=False))
    return [sequences[i] for i in idx], np.asarray(user_ids)[idx]


def load_sequences(name: str, data_dir=None, *, min_count: int = 5, num_users: Optional[int] = None,
                   seed: int = 0) -> SequenceDataset:
    """Load ``"beauty"`` (S3-Rec ``Beauty.txt``) or ``"video"`` (SASRec ``Video.txt``).

    Args:
      name: dataset name.
      data_dir: data root (default: :func:`poisonjax.data.data_root`).
      min_count: k of the k-core filter (``0``/``1`` = none). Beauty is already 5-core; Video is
        not (the SASRec paper keeps users/items with at least 5 interactions).
      num_users: keep a reproducible random subset of this many users *before* k-core filtering
        (the quick variant); ``None`` = all users.
      seed: seed of the subset.
    """
    if name not in DATASETS:
        raise PoisonJaxInputError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    spec = DATASETS[name]
    path = require(spec["path"], data_dir, what=f"{name} sequences")
    lines = Path(path).read_text().splitlines()
    parser = parse_user_per_line if spec["fmt"] == "user_per_line" else parse_interaction_per_line
    users, seqs = parser(lines, source=str(path))
    file_max = max(int(x.max()) for x in seqs)
    if num_users is not None:
        seqs, users = subsample_users(seqs, users, int(num_users), seed)
    if min_count and min_count > 1:
        seqs, item_ids, users = k_core(seqs, min_count, users)
    else:
        seqs, item_ids, users = _renumber([np.asarray(s, np.int64) for s in seqs], users)
    if not seqs:
        raise PoisonJaxInputError(f"{name}: no user survives {min_count}-core filtering of the chosen subset")
    return SequenceDataset(seqs, int(len(item_ids) - 1), item_ids, np.asarray(users), name, file_max)


# ------------------------------------------------------------------------------------ splits ----

def pad_left(sequences: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """``[N, max_len]`` int32: the last ``max_len`` items of each sequence, right-aligned, 0-padded."""
    out = np.zeros((len(sequences), max_len), np.int32)
    for r, s in enumerate(sequences):
        s = np.asarray(s)[-max_len:]
        if s.size:
            out[r, max_len - s.size:] = s
    return out


@dataclasses.dataclass
class LeaveOneOut:
    """Padded leave-one-out arrays (all right-aligned, 0 = padding).

    Attributes:
      train_x, train_y: ``[U, L]`` inputs and next-item positives of the training sequences.
      valid_x: ``[U, L]`` history for validation (training items), ``valid_y: [U]``.
      test_x: ``[U, L]`` history for test (training + validation items), ``test_y: [U]``.
      history: ``[U, H]`` every item the user saw before the test item (for masking in full
        ranking and for "users who never interacted with the target"), 0-padded.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    valid_x: np.ndarray
    valid_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    history: np.ndarray


def training_pairs(sequences: Sequence[np.ndarray], max_len: int) -> Tuple[np.ndarray, np.ndarray]:
    """Next-item training pairs of whole sequences: ``x = s[:-1]``, ``y = s[1:]`` (both ``[N, L]``)."""
    return pad_left([s[:-1] for s in sequences], max_len), pad_left([s[1:] for s in sequences], max_len)


def leave_one_out(sequences: Sequence[np.ndarray], max_len: int) -> LeaveOneOut:
    """Leave-one-out split (see module doc). Every sequence needs at least 3 items."""
    short = [i + 1 for i, s in enumerate(sequences) if len(s) < 3]
    if short:
        raise PoisonJaxInputError(f"leave_one_out needs sequences of length >= 3; lines {short[:10]} are shorter")
    tr = [np.asarray(s[:-2]) for s in sequences]
    train_x, train_y = training_pairs(tr, max_len)
    hist_len = max(len(s) - 1 for s in sequences)
    return LeaveOneOut(train_x, train_y, pad_left(tr, max_len), np.array([s[-2] for s in sequences], np.int32),
                       pad_left([s[:-1] for s in sequences], max_len), np.array([s[-1] for s in sequences], np.int32),
                       pad_left([s[:-1] for s in sequences], hist_len))
