"""The catalog points at real code, and every public function/class documents itself."""
import importlib
import inspect
import pkgutil

import pytest

import poisonjax
from poisonjax import catalog
from poisonjax.cli import available_studies


def test_catalog_entries_resolve_and_filter():
    es = catalog.entries()
    assert len(es) >= 2
    names = [e.name for e in es]
    assert len(names) == len(set((e.domain, e.name) for e in es)), "duplicate catalog names within a domain"
    studies = set(available_studies())
    for e in es:
        mod, _, attr = e.where.partition(":")
        obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
        assert callable(obj), e.where
        if e.study:
            assert e.study in studies, f"{e.name}: study {e.study!r} does not exist"
    assert all(e.domain == "vision" for e in catalog.entries(domain="vision"))
    assert all(e.family == "heuristic" for e in catalog.entries(family="heuristic"))
    with pytest.raises(ValueError, match="unknown family"):
        catalog.entries(family="magic")
    with pytest.raises(ValueError, match="goal"):
        catalog.Entry(name="x", kind="attack", domain="vision", family="heuristic", paper="p", where="m:f", goal="chaos")


def _public_members():
    for info in pkgutil.walk_packages(poisonjax.__path__, "poisonjax."):
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{mod.__name__}.{name}", obj


def test_every_public_function_and_class_has_a_docstring():
    missing = [n for n, o in _public_members() if not (o.__doc__ and o.__doc__.strip())]
    assert not missing, f"public API without docstrings: {missing}"
