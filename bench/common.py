"""What every benchmark shares: figures, medians, subprocess workers, paths.

A figure is one line of the report: our measurement beside a reference measured in the
same run (the kernel, dpkt), and their ratio.  Every number is the median of several
runs; the individual runs are kept so the spread can be seen.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
CACHE = os.environ.get("PROCFS_CT_BENCH_CACHE", "/tmp/procfs-ct-bench")


@dataclass
class Figure:
    """One measured comparison: ours against a reference, with the target ratio."""
    name: str
    ours: Optional[float]
    reference: Optional[float]
    unit: str
    reference_name: str = "kernel"
    target: str = ""                 # e.g. "<= 0.5": the ratio ours/reference must meet
    note: str = ""
    runs: List[float] = field(default_factory=list)
    reference_runs: List[float] = field(default_factory=list)
    load: Optional[Tuple[float, float]] = None   # 1-minute load average before, after

    def spread(self) -> str:
        """The runs' range, ours then the reference's (`min-max`), when there are several."""
        parts = []
        for runs in (self.runs, self.reference_runs):
            if len(runs) > 1:
                parts.append(f"{fmt(min(runs), self.unit)}-{fmt(max(runs), self.unit)}")
        return " / ".join(parts)

    @property
    def ratio(self) -> Optional[float]:
        if self.ours is None or not self.reference:
            return None
        return self.ours / self.reference

    @property
    def met(self) -> Optional[bool]:
        """The target is on the ratio ("<= 0.5") or on our own figure ("ours <= 500")."""
        if not self.target:
            return None
        words = self.target.split()
        measured = self.ours if words[0] == "ours" else self.ratio
        if measured is None:
            return None
        op, value = words[-2:]
        return measured <= float(value) if op == "<=" else measured >= float(value)

    def line(self) -> str:
        text = f"{self.name}: ours {fmt(self.ours, self.unit)}"
        if self.reference is not None or self.reference_name:
            if self.reference is not None:
                text += f", {self.reference_name} {fmt(self.reference, self.unit)}"
        if self.ratio is not None:
            text += f", ratio {self.ratio:.2f}"
        if self.target:
            met = self.met
            text += f" (target {self.target}{'' if met is None else ', met' if met else ', NOT met'})"
        if self.spread():
            text += f"; runs {self.spread()}"
        if self.load is not None:
            text += f"; load {self.load[0]:.2f} -> {self.load[1]:.2f}"
        if self.note:
            text += f" [{self.note}]"
        return text


def fmt(value: Optional[float], unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
    if unit == "us":
        return f"{value:.0f} us"
    if unit == "pps":
        return f"{value / 1000:.0f} kpackets/s"
    if unit == "B":
        return f"{value:.0f} B"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:g} {unit}"


def median(values: Sequence[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def say(text: str = "") -> None:
    print(text, flush=True)


def load_average() -> float:
    """The machine's 1-minute load average (other work on the machine skews a figure)."""
    return os.getloadavg()[0]


class Measuring:
    """`with Measuring() as m: ...`: the load average before and after, printed, kept in
    m.load for the figures measured inside."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.load: Optional[Tuple[float, float]] = None

    def __enter__(self) -> "Measuring":
        self._before = load_average()
        say(f"  {self.what}: load average {self._before:.2f} before")
        return self

    def __exit__(self, *exc: object) -> None:
        after = load_average()
        self.load = (self._before, after)
        say(f"  {self.what}: load average {after:.2f} after")


def worker(task: str, *args: Any, netns: Optional[str] = None, timeout: float = 1800,
           env: Optional[dict] = None) -> Any:
    """Run `python -m bench.worker TASK ARGS` in a fresh interpreter (in a network namespace
    if netns is given) and return the JSON it prints on its last line."""
    command = [PYTHON, "-m", "bench.worker", task, *map(str, args)]
    if netns:
        command = ["ip", "netns", "exec", netns] + command
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {}), PYTHONPATH=REPO))
    if done.returncode != 0:
        raise RuntimeError(f"worker {task} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed(function: Callable[[], Any]) -> float:
    """Seconds one call takes (perf_counter)."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def cache_path(name: str) -> str:
    os.makedirs(CACHE, exist_ok=True)
    return os.path.join(CACHE, name)
