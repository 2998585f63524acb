"""Replay a capture through an Engine on the capture's own clock."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO, Dict, List, Optional, Union

from .capture import read_capture
from .core import Engine
from .ctstate import Verdict

FORMAT_VIEWS = {"nf_conntrack": "net/nf_conntrack", "ip_conntrack": "net/ip_conntrack",
                "stat": "net/stat/nf_conntrack"}


@dataclass
class ReplayResult:
    engine: Engine
    verdicts: List[Optional[Verdict]] = field(default_factory=list)
    at: float = 0.0

    def text(self, fmt: str = "nf_conntrack") -> str:
        view = FORMAT_VIEWS[fmt]
        if fmt == "stat" and self.engine.profile == "tutorial":
            view = "net/stat/ip_conntrack"
        return self.engine.render_text(view, self.at)


def replay(capture: Union[str, BinaryIO], profile: str = "linux", at: Optional[float] = None,
           knobs_overrides: Optional[Dict[str, int]] = None,
           max_entries: Optional[int] = None, ram_bytes: Optional[int] = None,
           ncpu: Optional[int] = None) -> ReplayResult:
    """Feed every frame of a pcap/pcapng capture; the table is then shown as it stands at
    `at` (default: the last frame's time).  Frames after `at` are not fed."""
    engine = Engine(profile, ram_bytes=ram_bytes, max_entries=max_entries, ncpu=ncpu,
                    knobs_overrides=knobs_overrides)
    result = ReplayResult(engine)
    if isinstance(capture, str):
        with open(capture, "rb") as fileobj:
            _feed(result, fileobj, at)
    else:
        _feed(result, capture, at)
    if at is not None:
        result.at = at
    engine.advance(result.at)
    return result


def _feed(result: ReplayResult, fileobj: BinaryIO, at: Optional[float]) -> None:
    engine = result.engine
    for frame in read_capture(fileobj):
        if at is not None and frame.ts > at:
            break
        result.verdicts.append(engine.feed_frame(frame.ts, frame.linktype, frame.data))
        result.at = frame.ts
