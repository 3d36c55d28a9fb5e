"""The machine a benchmark ran on, and whether it was idle enough for a speed ratio to mean anything
(issue 15 part 4, issue 23: timings are only comparable with the machine they were taken on, and
ratios against torch peers taken while other jobs run are inflated -- torch's OpenMP threads degrade
badly when the cores are oversubscribed).

Usage in a benchmark script::

    import _machine                      # benchmarks/ is on sys.path when a script there runs
    MACHINE = _machine.start()           # prints "machine: <cpu> | ISA | cores | load before"
    ...
    m = MACHINE.finish()                 # dict: cpu_model, cpu_isa, cores, load_before, load_after,
                                         #       others_cpu_share, busy, busy_reasons, ...
    print("speed-up", MACHINE.ratio(ours_s, peer_s))   # "12.3x", or "12.3x [BUSY: ...]"

:func:`start` also prints the load after the run at interpreter exit (``atexit``), so a script that
only prints still records both.

**The idle rule** (:func:`busy_reasons`; ``C`` cores, ``own`` = the benchmark's own busy threads,
default ``C``: JAX and torch use every core). The run is *busy* if any of

1. ``load1_before > 0.5 C``: other work was running when the benchmark started (the 1-minute load
   average counts runnable threads; an idle machine sits near 0);
2. ``load1_after > min(own, C) + 0.5 C``: the benchmark itself adds at most ``min(own, C)`` to the
   load, so anything above that plus half the cores came from someone else during the run;
3. ``others_cpu_share > 0.15``: measured directly, the CPU time the *rest* of the machine used during
   the run (``/proc/stat`` busy time minus this process's and its children's ``getrusage`` time)
   exceeded 15% of ``wall x C``. The load average is a 1-minute exponential mean, so a competing job
   of one thread on a 2-core machine can stay below rule 2; this rule catches it.

A busy run still prints its figures, but every ratio is marked ``[BUSY: ...]`` with the loads and the
others' CPU share next to it, and the JSON carries ``busy: true`` and the reasons. Rerun such a run
on an idle machine (``/work/bin/heavy2`` holds both CPU slots of this project's machine).
"""
from __future__ import annotations

import atexit
import os
import platform
import resource
import time
from typing import Optional, Sequence

BEFORE_FRACTION = 0.5      # rule 1: load1 before <= 0.5 x cores
AFTER_FRACTION = 0.5       # rule 2: load1 after <= own threads + 0.5 x cores
OTHERS_CPU_SHARE = 0.15    # rule 3: the rest of the machine used <= 15% of the CPU during the run


def _cpuinfo() -> dict:
    out = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = line.split(":", 1)
                    out.setdefault(k.strip().lower(), v.strip())
    except OSError:
        pass
    return out


def cpu_model() -> str:
    """The CPU model string (``model name`` of /proc/cpuinfo, else ``platform.processor()``)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_isa() -> str:
    """The widest x86 vector ISA the CPU reports (``AVX-512`` / ``AVX2`` / ``AVX`` / ``SSE``), with the
    vendor (``GenuineIntel`` / ``AuthenticAMD``): torch's MKL/oneDNN and XLA pick kernels by it."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    isa = ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "AVX" if "avx" in flags
           else "SSE" if flags else platform.machine())
    vendor = info.get("vendor_id", "")
    return f"{vendor} {isa}".strip()


def load_average():
    """``(1, 5, 15)``-minute load averages, or ``None`` where the OS has none."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except (AttributeError, OSError):
        return None


def _machine_busy_seconds() -> Optional[float]:
    """CPU-seconds all CPUs spent busy since boot (``/proc/stat``: every field but idle and iowait)."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
        v = [float(x) for x in parts[1:]]
        busy = sum(v[:8]) - v[3] - v[4]          # user nice system idle iowait irq softirq steal
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _own_cpu_seconds() -> float:
    """CPU-seconds of this process and its waited-for children (subprocess peers)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def busy_reasons(load_before: Optional[Sequence[float]], load_after: Optional[Sequence[float]], cores: int,
                 own_threads: Optional[int] = None, others_cpu_share: Optional[float] = None) -> list:
    """The idle rule (see the module docstring): the list of reasons the run counts as busy (empty:
    idle). ``load_*`` are ``(1, 5, 15)``-minute load averages (``None``: unknown, not judged);
    ``own_threads`` defaults to ``cores``; ``others_cpu_share`` is the fraction of ``wall x cores``
    the rest of the machine used during the run (``None``: unknown)."""
    cores = max(1, int(cores or 1))
    own = cores if own_threads is None else max(0, min(int(own_threads), cores))
    out = []
    if load_before is not None and load_before[0] > BEFORE_FRACTION * cores:
        out.append(f"1-min load before {load_before[0]:.2f} > {BEFORE_FRACTION * cores:.2f} "
                   f"({BEFORE_FRACTION} x {cores} cores)")
    lim = own + AFTER_FRACTION * cores
    if load_after is not None and load_after[0] > lim:
        out.append(f"1-min load after {load_after[0]:.2f} > {lim:.2f} ({own} own threads + "
                   f"{AFTER_FRACTION} x {cores} cores)")
    if others_cpu_share is not None and others_cpu_share > OTHERS_CPU_SHARE:
        out.append(f"other processes used {100 * others_cpu_share:.0f}% of the CPU during the run "
                   f"(> {100 * OTHERS_CPU_SHARE:.0f}%)")
    return out


class Machine:
    """Machine description taken at :func:`start`; :meth:`finish` adds the load after the run and the
    idle verdict."""

    def __init__(self, own_threads: Optional[int] = None):
        self.own_threads = own_threads
        self.info = {"cpu_model": cpu_model(), "cpu_isa": cpu_isa(), "cores": os.cpu_count(),
                     "platform": platform.platform(), "python": platform.python_version(),
                     "load_before": load_average(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._t0, self._busy0, self._own0 = time.perf_counter(), _machine_busy_seconds(), _own_cpu_seconds()
        try:
            import jax
            self.info["jax"] = jax.__version__
        except Exception:  # noqa: BLE001  (benchmarks of peers may run without jax)
            pass
        self._done = False

    def finish(self) -> dict:
        """The machine dict with ``load_after``, ``others_cpu_share``, ``busy`` and ``busy_reasons``
        (taken now; calling it again re-measures up to now)."""
        self.info["load_after"] = load_average()
        wall = time.perf_counter() - self._t0
        busy1 = _machine_busy_seconds()
        share = None
        if busy1 is not None and self._busy0 is not None and wall > 0:
            others = (busy1 - self._busy0) - (_own_cpu_seconds() - self._own0)
            share = round(max(0.0, others) / (wall * (self.info["cores"] or 1)), 3)
        self.info.update(wall_seconds=round(wall, 2), others_cpu_share=share, own_threads=self.own_threads
                         or self.info["cores"])
        reasons = busy_reasons(self.info["load_before"], self.info["load_after"], self.info["cores"],
                               self.own_threads, share)
        self.info["busy"] = bool(reasons)
        self.info["busy_reasons"] = reasons
        self._done = True
        return dict(self.info)

    def busy(self) -> bool:
        """The idle rule's verdict up to now (calls :meth:`finish`)."""
        return self.finish()["busy"]

    def ratio(self, numerator: float, denominator: float, fmt: str = "{:.1f}x") -> str:
        """``numerator / denominator`` formatted, followed by ``[BUSY: loads, others' CPU share]`` when the
        machine was busy up to now (:meth:`verdict` gives the rules that fired)."""
        r = fmt.format(numerator / denominator)
        m = self.finish()
        if not m["busy"]:
            return r
        lb, la, sh = m["load_before"], m["load_after"], m["others_cpu_share"]
        return (f"{r} [BUSY: 1-min load {lb[0] if lb else '?'} before / {la[0] if la else '?'} after on "
                f"{m['cores']} cores" + (f", others used {100 * sh:.0f}% of the CPU" if sh is not None else "") + "]")

    def verdict(self) -> str:
        """``"idle"`` or ``"BUSY: reasons"`` (up to now)."""
        reasons = self.finish()["busy_reasons"]
        return "idle" if not reasons else "BUSY: " + "; ".join(reasons)

    def line(self) -> str:
        return (f"machine: {self.info['cpu_model']} | {self.info['cpu_isa']} | {self.info['cores']} cores | "
                f"load before {self.info['load_before']}"
                + (f" | load after {self.info['load_after']}" if "load_after" in self.info else ""))


def start(print_header: bool = True, own_threads: Optional[int] = None) -> Machine:
    """Describe the machine now (print it unless ``print_header=False``) and print the load average
    and the idle verdict again at exit. ``own_threads``: the benchmark's busy threads (default: all
    cores)."""
    m = Machine(own_threads)
    if print_header:
        print(m.line(), flush=True)

    def _at_exit():
        m.finish()
        print(f"machine: load after {m.info['load_after']} | others' CPU share {m.info['others_cpu_share']} | "
              f"{'BUSY: ' + '; '.join(m.info['busy_reasons']) if m.info['busy'] else 'idle'}", flush=True)

    atexit.register(_at_exit)
    return m
