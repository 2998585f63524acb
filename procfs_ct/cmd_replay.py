"""`procfs-ct replay CAPTURE`: a capture through the engine on its own clock."""
from __future__ import annotations

import argparse
import os
import sys

from engine.profile import PROFILES

HELP = ("Feed a pcap/pcapng capture through the engine on the capture's own clock and print "
        "the table as it stands at --at (default: the last packet's time).")
EPILOG = ("--ctstate prints one line per packet instead: "
          '"<n> <NEW|ESTABLISHED|RELATED|INVALID|UNTRACKED>[ reply]"; '
          "n counts capture frames from 1; a frame conntrack never sees prints no line: not IPv4, "
          "an IP header the kernel's ip_rcv drops, a fragment held for reassembly, the "
          "outgoing copy of a forwarded datagram.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("capture", metavar="CAPTURE", help="pcap or pcapng file")
    parser.add_argument("--profile", choices=PROFILES, default="tutorial",
                        help="tutorial (2.4/2.6 ip_conntrack, default) or linux (nf_conntrack)")
    parser.add_argument("--format", choices=("ip_conntrack", "nf_conntrack", "stat"),
                        default=None, help="listing format (default: ip_conntrack for the "
                        "tutorial profile, nf_conntrack for linux)")
    parser.add_argument("--at", type=float, metavar="EPOCH_SECONDS", default=None,
                        help="show the table at this time (default: the last packet's)")
    parser.add_argument("--ctstate", action="store_true",
                        help="print each packet's conntrack state instead of the table")
    parser.add_argument("--max", type=int, default=None, metavar="N",
                        help="table size limit (default: from RAM, as the kernel computes it)")


def run(args: argparse.Namespace) -> int:
    from engine.capture import CaptureError
    from engine.replay import replay
    from .errors import UsageError

    if not os.path.isfile(args.capture):
        raise UsageError(f"{args.capture}: no such file")
    try:
        result = replay(args.capture, profile=args.profile, at=args.at, max_entries=args.max)
    except CaptureError as exc:
        raise UsageError(f"{args.capture}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{args.capture}: {exc.strerror}") from None
    out = sys.stdout
    if args.ctstate:
        for n, verdict in enumerate(result.verdicts, 1):
            if verdict is not None:
                out.write(f"{n} {verdict}\n")
        return 0
    fmt = args.format or ("nf_conntrack" if args.profile == "linux" else "ip_conntrack")
    out.write(result.text(fmt))
    return 0
