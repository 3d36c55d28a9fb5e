"""Centralised datasets for federated studies: a thin re-export of the one dataset registry,
:mod:`poisonjax.data` (:data:`~poisonjax.data.ARRAY_DATASETS`, :func:`~poisonjax.data.load_arrays`)."""
from poisonjax.data import ARRAY_DATASETS as DATASETS
from poisonjax.data import load_arrays as load

__all__ = ["DATASETS", "load"]
