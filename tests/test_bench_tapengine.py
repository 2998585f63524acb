"""bench/tapengine.py: the frames it counts are what its text says -- the tap's cooked
frames of 65,536 distinct flows in either shape, every one answered by the fast path, the
known passes finding the entries the first pass made -- and its figure is the count's
difference over the known datagrams.  callgrind itself is not run here (a bench tool)."""
from __future__ import annotations

import pytest

from bench import tapengine
from engine.linklayer import LINKTYPE_LINUX_SLL2


@pytest.mark.parametrize("shape", tapengine.SHAPES)
def test_each_shape_makes_65536_entries_and_the_known_pass_finds_them(shape, monkeypatch):
    frames = tapengine.frames_of(shape, 1)
    assert len(frames) == 2 * tapengine.FLOWS
    assert {linktype for _, linktype, _ in frames} == {LINKTYPE_LINUX_SLL2}
    from engine.core import Engine
    made = []
    real = Engine.__init__

    def remember(self, *args, **kwargs):
        real(self, *args, **kwargs)
        made.append(self)
    monkeypatch.setattr(Engine, "__init__", remember)
    monkeypatch.setattr(tapengine, "frames_of", lambda shape, passes: frames)
    tapengine.run(shape, 1, "fast")     # raises if a frame is declined or entries differ
    stats = made[0].tracker.stats
    assert (stats["new"], stats["found"]) == (tapengine.FLOWS, tapengine.FLOWS)


def test_per_known_is_the_difference_over_the_known_datagrams(monkeypatch):
    def fake_count(code: str, tree: str) -> dict:
        passes = int(code.split(", ")[1])
        return {"instructions": 1_000_000 + passes * tapengine.FLOWS * 3_000}
    monkeypatch.setattr(tapengine, "count", fake_count)
    monkeypatch.setattr(tapengine, "saved_frames", lambda shape, passes: "/nowhere.pickle")
    assert tapengine.per_known("sports", 2, "fast", "/nowhere") == 3_000.0
