"""Datasets: loaders for standard formats, synthetic generators and client partitions (DESIGN.md section 5).

:func:`load_dataset` dispatches by name; the per-format loaders live in :mod:`~poisonjax.data.images`,
:mod:`~poisonjax.data.graphs`, :mod:`~poisonjax.data.sequences`, :mod:`~poisonjax.data.nslkdd`,
:mod:`~poisonjax.data.text`; generators in :mod:`~poisonjax.data.synthetic`; partitions in
:mod:`~poisonjax.data.partitions`. Dataset folders, their checksums, sources and licences are in
:mod:`~poisonjax.data.registry`; fetching and verifying in :mod:`~poisonjax.data.fetch`.

The data root is resolved in one order (CLI, Python and tests alike): ``data_dir=`` > ``$POISONJAX_DATA`` >
``../shared/data`` beside a source checkout (if it exists) > ``~/.cache/poisonjax``.
"""
from poisonjax.data._base import DataNotFoundError, data_root, data_root_and_source, require

DATASETS = {
    "digits": "images", "mnist": "images", "cifar10": "images", "cifar10_20k": "images",
    "cora": "graphs", "citeseer": "graphs", "polblogs": "graphs", "cora_ml": "graphs", "pubmed": "graphs",
    "planetoid_cora": "graphs", "planetoid_citeseer": "graphs",
    "beauty": "sequences", "video": "sequences",
    "nslkdd": "nslkdd", "nslkdd5": "nslkdd",
    "sst2": "text", "trec": "text",
}


def load_dataset(name: str, data_dir=None, **kwargs):
    """Load a dataset by name (see :data:`DATASETS`); unknown names raise an error listing the valid ones.

    ``kwargs`` go to the format's loader (e.g. ``split=`` for text, ``num_users=`` for sequences,
    ``n_train=`` for images).
    """
    from poisonjax.core.validation import check_choice
    check_choice("dataset", name, DATASETS)
    kind = DATASETS[name]
    if kind == "images":
        from poisonjax.data.images import load_image_dataset
        return load_image_dataset(name, data_dir, **kwargs)
    if kind == "graphs":
        from poisonjax.data.graphs import load_graph
        return load_graph(name, data_dir, **kwargs)
    if kind == "sequences":
        from poisonjax.data.sequences import load_sequences
        return load_sequences(name, data_dir, **kwargs)
    if kind == "nslkdd":
        from poisonjax.data.nslkdd import load_nslkdd
        return load_nslkdd("binary" if name == "nslkdd" else "5class", data_dir, **kwargs)
    from poisonjax.data import text
    return (text.load_sst2 if name == "sst2" else text.load_trec)(data_dir=data_dir, **kwargs)


#: Loader names :func:`load_arrays` serves (classification sets as plain arrays).
ARRAY_DATASETS = tuple(n for n, kind in DATASETS.items() if kind in ("images", "nslkdd"))


def load_arrays(name: str, data_dir=None, seed: int = 0, **kwargs):
    """``(x_train, y_train, x_test, y_test, num_classes)`` as numpy arrays for a classification set in
    :data:`ARRAY_DATASETS`: ``digits`` (scikit-learn, no files), ``mnist`` (shared 5k subset + official test set),
    ``cifar10`` (shared JPEG subset): images NHWC float32 in [0, 1]; ``nslkdd`` (binary) / ``nslkdd5``
    (5-class): encoded float32 features. Labels int32. ``kwargs`` go to the loader (e.g. ``n_train=``)."""
    import numpy as np
    from poisonjax.core.validation import check_choice
    check_choice("dataset", name, ARRAY_DATASETS)
    if DATASETS[name] == "nslkdd":
        d = load_dataset(name, data_dir, **kwargs)
    else:
        d = load_dataset(name, data_dir, seed=seed, **kwargs)
    return (np.asarray(d.x_train, np.float32), np.asarray(d.y_train, np.int32), np.asarray(d.x_test, np.float32),
            np.asarray(d.y_test, np.int32), int(d.num_classes))


__all__ = ["ARRAY_DATASETS", "DATASETS", "DataNotFoundError", "data_root", "data_root_and_source", "load_arrays",
           "load_dataset", "require"]
