"""Traffic sources: where the engine thread's frames come from, chosen by a SPEC string.

    synthetic[:PPS]       seeded synthetic mix (default 200 packets per second)
    pcap:FILE[@SPEED]     a pcap/pcapng capture played from now on its own timing,
                          scaled by SPEED (default 1; 0 = as fast as possible, in order)
    tap:IFACE[,IFACE...]  live tap on AF_PACKET sockets (root); see sources/tap.py
    sockets[:SECONDS]     this host's TCP/UDP sockets (psutil), polled; see sources/sockets.py
    none                  no traffic at all

Every source yields (ts, linktype, frame): ts is the wall-clock time the frame is due
(non-decreasing), linktype the pcap LINKTYPE_* number of the frame; a pcapng capture's
frame adds the name of the interface it was captured on (what `-i`/`-o` match).
Sources never sleep; the driver waits until each frame is due.  A bad SPEC raises UsageError with
one line saying what is wrong, before any frame is produced.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable, Iterator, Optional

from engine.capture import CaptureError
from engine.linklayer import LINKTYPE_ETHERNET

from ..errors import UsageError
from .pcapfile import replay_capture
from .synthetic import DEFAULT_RATE, SyntheticTraffic

Frames = Iterator[tuple[float, int, bytes]]
SPEC_HELP = "synthetic[:PPS], pcap:FILE[@SPEED], tap:IFACE, sockets[:SECONDS] or none"


def _number(text: str, what: str, *, zero_ok: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        kind = "a number >= 0" if zero_ok else "a positive number"
        raise UsageError(f"{what} must be {kind}, not {text!r}")
    return value


def _synthetic(arg: Optional[str], seed: int, start: Optional[float]) -> Frames:
    rate = DEFAULT_RATE if arg is None else _number(arg, "synthetic packets per second",
                                                     zero_ok=False)
    frames = SyntheticTraffic(seed=seed, rate=rate,
                              start=time.time() if start is None else start).frames()
    return ((ts, LINKTYPE_ETHERNET, frame) for ts, frame in frames)


def _pcap(arg: Optional[str], seed: int, start: Optional[float]) -> Frames:
    if not arg:
        raise UsageError("pcap source needs a file: pcap:FILE[@SPEED]")
    path, speed = arg, 1.0
    head, at, tail = arg.rpartition("@")
    # A file name may itself contain '@': only a suffix that is not part of an
    # existing file's name is read as the speed.
    if at and not os.path.exists(arg):
        path, speed = head, _number(tail, f"replay speed in {arg!r}", zero_ok=True)
    if not os.path.exists(path):
        raise UsageError(f"pcap source: {path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"pcap source: {path}: is a directory")   # a pipe is fine
    try:
        return replay_capture(path, speed=speed, start=start)
    except CaptureError as exc:
        raise UsageError(f"pcap source: {path}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"pcap source: {path}: {exc.strerror}") from None


def _tap(arg: Optional[str], seed: int, start: Optional[float]) -> Frames:
    from .tap import open_tap          # live sources stamp frames with their own clock
    return open_tap(f"tap:{arg or ''}")


def _sockets(arg: Optional[str], seed: int, start: Optional[float]) -> Frames:
    from .sockets import open_sockets
    return open_sockets("sockets" if arg is None else f"sockets:{arg}")


def _none(arg: Optional[str], seed: int, start: Optional[float]) -> Frames:
    return iter(())


# kind -> opener(argument after "kind:" or None, seed, start or None for now)
OPENERS: dict[str, Callable[[Optional[str], int, Optional[float]], Frames]] = {
    "synthetic": _synthetic,
    "pcap": _pcap,
    "tap": _tap,
    "sockets": _sockets,
    "none": _none,
}


def open_source(spec: str, seed: int = 0, start: Optional[float] = None) -> Frames:
    """The frames of the source named by spec, due from start (default: now; for a capture,
    the moment its first frame is read, so that the time the mount takes to come up does
    not start the replay late)."""
    kind, colon, arg = spec.partition(":")
    opener = OPENERS.get(kind)
    if opener is None or (kind == "none" and colon):
        raise UsageError(f"unknown traffic source {spec!r}: expected {SPEC_HELP}")
    return opener(arg if colon else None, seed, start)
