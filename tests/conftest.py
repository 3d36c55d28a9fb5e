"""Test-wide helpers: datasets that are absent make their tests SKIP with one line naming the dataset and the
``poisonjax data fetch NAME`` command (never fail, never pass silently).

Two mechanisms (the data root is resolved as everywhere else, see :func:`poisonjax.data.data_root`):

* ``@pytest.mark.requires_data("nsl_kdd", ...)`` (dataset folder names, or loader names such as ``"cora"``):
  skips before the test runs unless every file of those datasets is present.
* a fallback: a :class:`~poisonjax.data.DataNotFoundError` raised anywhere in a test or its fixtures (directly or
  as the cause of another error) turns the test into a skip naming the dataset(s).

``POISONJAX_REQUIRE_DATA=1`` (CI sets it: CI has the data) turns both off, so a missing dataset fails there.

Before the tests run, missing datasets that the tests need are **fetched automatically** into the data root, with
their checksums verified (from their pinned sources, or from ``$POISONJAX_DATA_MIRROR`` laid out as
``URL/<name>/<file>``): first one probe of the source host (5 s timeout); if it is unreachable (no network) nothing
is fetched and one line says so; otherwise each request has a 10 s timeout and a dataset is given up after 3
failures in a row. When everything is present (CI) nothing happens. ``--no-fetch-data`` (or
``POISONJAX_NO_FETCH=1``) turns the fetch off; ``--fetch-data`` is accepted for compatibility (it is the default).
"""
from __future__ import annotations

import pytest

from poisonjax.data import DataNotFoundError
from poisonjax.data._base import data_root_and_source, fetch_command

# Datasets the non-slow tests read (what --fetch-data tries to get).
TEST_DATASETS = ("nsl_kdd", "mnist", "cifar10_jpeg_subset", "planetoid_cora_citeseer", "planetoid_pubmed_partial",
                 "nettack_npz_cora_citeseer_polblogs", "prognn_perturbed_graphs", "amazon_beauty_s3rec",
                 "sasrec_amazon_video", "sst2_trec_text")


def skip_reason(datasets, n_missing=None) -> str:
    """The one-line skip reason for missing ``datasets``."""
    root, why = data_root_and_source()
    names = ", ".join(dict.fromkeys(datasets)) or "(unknown dataset)"
    more = f" ({n_missing} files missing)" if n_missing else ""
    return f"dataset {names} not found under {root} ({why}){more}; run: {fetch_command(datasets)}"


def _find_dnf(exc):
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DataNotFoundError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def pytest_addoption(parser):
    parser.addoption("--fetch-data", action="store_true", default=True,
                     help="poisonjax: before the tests, fetch missing test datasets into the data root (the default; "
                          "short timeouts; nothing happens when all are present or the network is unreachable)")
    parser.addoption("--no-fetch-data", action="store_false", dest="fetch_data",
                     help="poisonjax: do not fetch missing test datasets (their tests are skipped, naming the fetch "
                          "command); the same as POISONJAX_NO_FETCH=1")


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_data(*names): skip (naming the fetch command) unless the "
                                       "named datasets are present under the data root")
    import os
    wanted = config.getoption("fetch_data") and os.environ.get("POISONJAX_NO_FETCH", "") in ("", "0")
    if wanted and not hasattr(config, "workerinput"):  # controller only, not xdist workers
        from poisonjax.data.fetch import fetch_missing
        fetch_missing(TEST_DATASETS, mirror=os.environ.get("POISONJAX_DATA_MIRROR") or None)


def _data_required() -> bool:
    import os
    return os.environ.get("POISONJAX_REQUIRE_DATA", "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    if _data_required():
        return
    from poisonjax.data.registry import DATASETS, folders_for, missing_files
    cache = {}
    for item in items:
        for mark in item.iter_markers("requires_data"):
            names = []
            for n in mark.args:
                names += [n] if n in DATASETS else list(folders_for(n) or [n])
            key = tuple(names)
            if key not in cache:
                cache[key] = missing_files(names)  # unknown names raise, listing the valid ones
            if cache[key]:
                item.add_marker(pytest.mark.skip(reason=skip_reason([d for d, _ in cache[key]], len(cache[key]))))
                break


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if call.excinfo is None or not rep.failed or _data_required():
        return
    err = _find_dnf(call.excinfo.value)
    if err is None:
        return
    lineno = item.location[1]
    rep.outcome = "skipped"
    rep.longrepr = (str(item.path), (lineno + 1) if lineno is not None else 0,
                    "Skipped: " + skip_reason(err.datasets or ["(unknown dataset)"]))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under ``pytest -n N`` keep each test file on one worker (xdist's ``--dist loadfile``): the study tests
    share expensive module-scoped fixtures (a whole quick study each), which the default ``load`` scheduling
    builds once per worker. An explicit ``--dist`` other than ``load`` is left alone."""
    if config.getoption("dist", "load") != "load":
        return None
    from xdist.scheduler import LoadFileScheduling
    return LoadFileScheduling(config, log)
