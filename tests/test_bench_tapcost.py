"""bench/tapcost.py reads bench/instructions.py's count() as that module returns it (a
dict of counts by name since `--cache` came): the two drifted apart once, and tapcost
then failed at its first stage.  callgrind itself is not run here (valgrind is a bench
tool, not a test dependency): count() is replaced by one of the same shape."""
from __future__ import annotations

import inspect

from bench import instructions, tapcost


def test_per_frame_is_the_instructions_difference_over_the_frames(monkeypatch):
    counts = {True: 5_000_000, False: 1_000_000}

    def fake_count(code: str, tree: str) -> dict:
        work = "True)" in code
        return {"instructions": counts[work]}
    monkeypatch.setattr(tapcost, "count", fake_count)
    assert tapcost.per_frame("decode", 1_000, "/nowhere") == 4_000.0


def test_tapcost_counts_with_instructions_count_whose_result_is_a_dict_by_name():
    # The fake above must have count()'s shape: a Dict[str, int] with "instructions".
    assert tapcost.count is instructions.count
    assert "Dict[str, int]" in str(inspect.signature(instructions.count).return_annotation)
