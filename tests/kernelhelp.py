"""Shared helpers of the kernel differential suites (loopback and wire): loading the
stdlib-only modules of tests/kernel/ and reading what the kernel and the engine print."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional

from engine.replay import NOT_SEEN, ReplayResult, ctstate_word, replay

KERNEL_DIR = Path(__file__).resolve().parent / "kernel"


def load_kernel_module(name: str) -> ModuleType:
    """tests/kernel/<name>.py as module pct_kernel_<name> (the directory is no package, and
    its generic names - listing, ruleset - stay off sys.path)."""
    qualified = f"pct_kernel_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, KERNEL_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def verdict_text(verdict) -> "str | None":
    """An engine verdict as the generators store the kernel's: "NEW", "ESTABLISHED reply"."""
    if verdict is None:
        return None
    return verdict.state.name + (" reply" if verdict.reply else "")


def engine_frame_words(verdicts) -> list:
    """The engine's per-frame --ctstate words (NOTSEEN where it made no verdict)."""
    return [ctstate_word(v) for v in verdicts]


def kernel_frame_words(states) -> list:
    """The kernel's per-frame states as --ctstate words: a frame without a log record (its
    conntrack never saw it on its own) is NOTSEEN."""
    return [NOT_SEEN if state is None else state for state in states]


def stat_totals(text: str) -> dict:
    """Column totals of a stat file (per-CPU rows summed; `entries` taken from the first row)."""
    lines = text.splitlines()
    header = lines[0].split()
    rows = [line.split() for line in lines[1:] if line.strip()]
    totals = {name: sum(int(row[i], 16) for row in rows) for i, name in enumerate(header)}
    totals[header[0]] = int(rows[0][0], 16)
    return totals


def load_snapshot(directory: Path) -> dict:
    return json.loads((directory / "snapshot.json").read_text())


def knob_sets(snap: dict) -> list:
    """The scenario's knobs as `procfs-ct replay --set` arguments: the generator wrote
    /proc/sys/net/netfilter/nf_conntrack_<name> in the observed namespace."""
    return [f"nf_conntrack_{name}={value}" for name, value in
            sorted((snap["knobs_overrides"] or {}).items())]


def host_options(snap: dict) -> list:
    """`procfs-ct replay` options describing the observed host of a wire scenario that does
    not forward: its address (with the link's prefix length when stored) and --no-forward."""
    if snap.get("hooks") != "wire" or snap.get("forward"):
        return []
    prefix = f"/{snap['prefix_len']}" if snap.get("prefix_len") else ""
    return ["--local", snap["server"] + prefix, "--no-forward"]


def replay_scenario(directory: Path, fast_path: bool = True,
                    capture: Optional[Path] = None) -> ReplayResult:
    """A stored scenario's capture through the engine, as its snapshot says it was taken: its
    knobs written as `--set` writes them; for a wire scenario whose server does not forward,
    its address and link (host_options()).  `fast_path` False: the general path only.
    `capture`: that capture in place of the stored one (the same packets framed otherwise)."""
    from procfs_ct.cmd_replay import knob_named, parse_local

    snap = load_snapshot(directory)
    writes = []
    for spec in knob_sets(snap):
        name, _, value = spec.partition("=")
        writes.append((knob_named(name), f"{value}\n".encode()))
    host = host_options(snap)
    local, broadcasts = parse_local(host[1:2])
    capture = directory / "capture.pcap" if capture is None else capture
    return replay(str(capture), profile=snap["profile"], at=snap["at"],
                  knob_writes=writes, max_entries=snap["max_entries"], local_addresses=local,
                  broadcast_addresses=broadcasts, forwarding=not host, fast_path=fast_path)


def namespaces_unavailable(tools: tuple, probe: str) -> str:
    """Why a live kernel scenario cannot run here ('' if it can): root, the tools, and a
    network namespace `probe` made and deleted."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in tools:
        if not shutil.which(tool):
            return f"needs {tool}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return "" if made.returncode == 0 else "ip netns add fails here"
