"""Root conftest: puts the repo root on sys.path so ``configs.*`` and ``experiments.*`` import."""
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Tests read the shared datasets from $POISONJAX_DATA; default to the workspace's ../shared/data.
_shared = os.path.join(os.path.dirname(ROOT), "shared", "data")
if not os.environ.get("POISONJAX_DATA") and os.path.isdir(_shared):
    os.environ["POISONJAX_DATA"] = _shared
