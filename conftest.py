"""Root conftest: puts the repo root on sys.path so ``configs.*`` and ``experiments.*`` import."""
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The data root is resolved by poisonjax.data.data_root (data_dir > $POISONJAX_DATA > ../shared/data beside
# the checkout > ~/.cache/poisonjax), the same order as the CLI and the library.
