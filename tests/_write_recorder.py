"""Record every Python-level file write of a child process (the multi-host tests check that only process 0
writes). Used by ``tests/federated/_fl_multihost_child.py`` and ``tests/vision/_wb_multihost_child.py``.

:func:`install` wraps ``builtins.open`` (write, append, exclusive and update modes), ``pathlib.Path.write_text``
and ``os.replace`` (the last step of an atomic write). Call it before importing anything that writes.
"""
from __future__ import annotations

import builtins
import os
import pathlib


def install():
    """Start recording. Returns ``(writes, real_open)``: the list that every recorded write appends its absolute
    path to, and the unwrapped ``open`` (for the child's own log, which is not a write of the code under test)."""
    writes = []
    real_open, real_write_text, real_replace = builtins.open, pathlib.Path.write_text, os.replace

    def rec(path):
        writes.append(os.path.abspath(str(path)))

    def open_rec(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and isinstance(file, (str, os.PathLike)):
            rec(file)
        return real_open(file, mode, *a, **k)

    def write_text_rec(self, *a, **k):
        rec(self)
        return real_write_text(self, *a, **k)

    def replace_rec(src, dst, *a, **k):
        rec(dst)
        return real_replace(src, dst, *a, **k)

    builtins.open, pathlib.Path.write_text, os.replace = open_rec, write_text_rec, replace_rec
    return writes, real_open
