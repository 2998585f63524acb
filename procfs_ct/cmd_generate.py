"""`procfs-ct generate --out FILE.pcap`: the synthetic source written as a capture."""
from __future__ import annotations

import argparse
import math
import sys

HELP = ("Write S seconds of the synthetic traffic source as an Ethernet pcap capture that "
        "tcpdump and Wireshark read (valid checksums; same seed and start -> same bytes).")
EPILOG = ("The capture starts at --start (a fixed time, so the file does not depend on when it "
          "was made) and holds the start-up burst of every kind of conversation followed by "
          "the steady mix at --rate packets per second.  --out - writes to standard output.")

DEFAULT_START = 1_700_000_000.0    # 2023-11-14 22:13:20 UTC


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .sources.synthetic import DEFAULT_RATE
    parser.add_argument("--out", required=True, metavar="FILE.pcap",
                        help="capture file to write ('-' for standard output)")
    parser.add_argument("--seconds", type=float, default=10.0, metavar="S",
                        help="length of the capture in seconds (default 10)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="random seed of the traffic (default 0)")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="PPS",
                        help=f"steady-state packets per second (default {DEFAULT_RATE:g})")
    parser.add_argument("--start", type=float, default=DEFAULT_START, metavar="EPOCH_SECONDS",
                        help=f"time stamp of the capture's start (default {DEFAULT_START:.0f})")


def write_capture(fileobj, seconds: float, seed: int, rate: float, start: float) -> int:
    """Write the synthetic frames due in [start, start + seconds) as pcap; returns the count."""
    from engine.capture import PcapWriter
    from engine.linklayer import LINKTYPE_ETHERNET
    from .sources.synthetic import SyntheticTraffic

    writer = PcapWriter(fileobj, linktype=LINKTYPE_ETHERNET)
    end = start + seconds
    count = 0
    for ts, frame in SyntheticTraffic(seed=seed, rate=rate, start=start).frames():
        if ts >= end:
            break
        writer.write(ts, frame)
        count += 1
    return count


def run(args: argparse.Namespace) -> int:
    from .errors import UsageError

    for name, value in (("--seconds", args.seconds), ("--rate", args.rate)):
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"{name} must be a positive number, not {value:g}")
    if not (math.isfinite(args.start) and 0 <= args.start < 2 ** 32):
        raise UsageError(f"--start must be a time a pcap can hold (0 .. 4294967295), "
                         f"not {args.start:g}")
    if args.out == "-":
        count = write_capture(sys.stdout.buffer, args.seconds, args.seed, args.rate, args.start)
        sys.stdout.buffer.flush()
    else:
        try:
            with open(args.out, "wb") as fileobj:
                count = write_capture(fileobj, args.seconds, args.seed, args.rate, args.start)
        except OSError as exc:
            raise UsageError(f"cannot write {args.out}: {exc.strerror}") from None
    print(f"procfs-ct generate: wrote {count} packets ({args.seconds:g} s, seed {args.seed}, "
          f"{args.rate:g} pps) to {args.out}", file=sys.stderr)
    return 0
