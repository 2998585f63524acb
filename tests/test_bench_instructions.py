"""bench/instructions.py's --loop: the replay's loop and the capture's reading alone."""
from __future__ import annotations

import subprocess
import sys

from bench import instructions
from bench.common import REPO
from engine.build import build_ethernet, build_udp_datagram
from engine.capture import PcapWriter


def test_the_loop_task_replays_without_tracking(tmp_path):
    """The loop task runs the replay with the fast path a constant: every frame answered,
    nothing tracked (the script prints the table's size and the verdicts to show it)."""
    path = tmp_path / "two.pcap"
    with open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj)
        for n in range(2):
            writer.write(1.0 + n, build_ethernet(build_udp_datagram("10.0.0.1", "10.0.0.2",
                                                                   1000 + n, 53, b"x")))
    code = (instructions.TASKS["loop"].format(path=str(path))
            .replace("\nreplay(", "\nresult = replay(")
            + "\nprint(len(result.engine.tracker.conns), result.verdicts)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, check=True)
    assert done.stdout.split() == ["0", "[1,", "1]"]


def test_loop_counts_the_loop_side(monkeypatch, capsys):
    sides = []

    def per_packet(side, packets, tree, counter):
        sides.append(side)
        return {"instructions": 1000.0}

    monkeypatch.setattr(instructions, "per_packet", per_packet)
    instructions.main(["--loop", "--no-dpkt"])
    instructions.main(["--no-dpkt"])
    assert sides == ["loop", "ours"]
    assert capsys.readouterr().out.startswith("loop (")
