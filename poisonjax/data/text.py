"""Plain-text classification corpora: SST-2 (sentence level) and TREC-6/50 questions.

Files (under the data root, see :mod:`poisonjax.data._base`):
``sst2_trec_text/stsa.binary.{train,dev,test}`` (``<0|1> <tokenised sentence>``) and
``sst2_trec_text/TREC.{train,test}`` (``<COARSE>:<fine> <question>``; ``TREC.train`` holds one
latin-1 byte, so it is decoded as latin-1).
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import numpy as np

from poisonjax.core.validation import check_choice
from poisonjax.data._base import require

TREC_COARSE = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
_SPLITS = {"sst2": ("train", "dev", "test"), "trec": ("train", "test")}


class TextDataset(NamedTuple):
    """``texts`` (list of str), integer ``labels [N]``, ``label_names`` and, for TREC, ``fine_labels``."""

    texts: List[str]
    labels: np.ndarray
    label_names: tuple
    fine_labels: Optional[List[str]] = None


def load_sst2(split: str = "train", data_dir=None) -> TextDataset:
    """SST-2 sentence-level split (``train`` 6,920 / ``dev`` 872 / ``test`` 1,821); labels 0=neg, 1=pos."""
    check_choice("split", split, _SPLITS["sst2"])
    path = require(f"sst2_trec_text/stsa.binary.{split}", data_dir, what=f"SST-2 {split} split")
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            lab, _, text = line.partition(" ")
            if lab not in ("0", "1"):
                raise ValueError(f"{path}:{ln}: expected a 0/1 label at the start of the line, got {lab!r}")
            texts.append(text)
            labels.append(int(lab))
    return TextDataset(texts, np.asarray(labels, np.int32), ("negative", "positive"))


def load_trec(split: str = "train", data_dir=None) -> TextDataset:
    """TREC question classification (``train`` 5,452 / ``test`` 500); labels index :data:`TREC_COARSE`,
    ``fine_labels`` keep the ``COARSE:fine`` strings."""
    check_choice("split", split, _SPLITS["trec"])
    path = require(f"sst2_trec_text/TREC.{split}", data_dir, what=f"TREC {split} split")
    texts, labels, fine = [], [], []
    with open(path, encoding="latin-1") as f:
        for ln, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            lab, _, text = line.partition(" ")
            coarse = lab.split(":")[0]
            if coarse not in TREC_COARSE:
                raise ValueError(f"{path}:{ln}: unknown TREC class {lab!r}; expected one of {TREC_COARSE}")
            texts.append(text)
            labels.append(TREC_COARSE.index(coarse))
            fine.append(lab)
    return TextDataset(texts, np.asarray(labels, np.int32), TREC_COARSE, fine)
