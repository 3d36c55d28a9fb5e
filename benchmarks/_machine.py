"""The machine a benchmark ran on: CPU model, core count, load average before and after (shared by all
benchmarks, issue 15 part 4: timings are only comparable with the machine they were taken on).

Usage in a benchmark script::

    import _machine                      # benchmarks/ is on sys.path when a script there runs
    MACHINE = _machine.start()           # prints "machine: <cpu> | cores | load before"
    ...
    out["machine"] = MACHINE.finish()    # dict with cpu_model, cores, load_before, load_after, ...

:func:`start` also prints the load after the run at interpreter exit (``atexit``), so a script that
only prints still records both.
"""
from __future__ import annotations

import atexit
import os
import platform
import time


def cpu_model() -> str:
    """The CPU model string (``model name`` of /proc/cpuinfo, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average():
    """``(1, 5, 15)``-minute load averages, or ``None`` where the OS has none."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except (AttributeError, OSError):
        return None


class Machine:
    """Machine description taken at :func:`start`; :meth:`finish` adds the load after the run."""

    def __init__(self):
        self.info = {"cpu_model": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                     "python": platform.python_version(), "load_before": load_average(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            import jax
            self.info["jax"] = jax.__version__
        except Exception:  # noqa: BLE001  (benchmarks of peers may run without jax)
            pass
        self._done = False

    def finish(self) -> dict:
        """The machine dict with ``load_after`` (taken now); call once at the end of the run."""
        self.info["load_after"] = load_average()
        self._done = True
        return dict(self.info)

    def line(self) -> str:
        return (f"machine: {self.info['cpu_model']} | {self.info['cores']} cores | load before "
                f"{self.info['load_before']}" + (f" | load after {self.info['load_after']}" if "load_after" in self.info else ""))


def start(print_header: bool = True) -> Machine:
    """Describe the machine now (print it unless ``print_header=False``) and print the load average
    again at exit."""
    m = Machine()
    if print_header:
        print(m.line(), flush=True)

    def _at_exit():
        if not m._done:
            m.finish()
        print(f"machine: load after {m.info['load_after']}", flush=True)

    atexit.register(_at_exit)
    return m
