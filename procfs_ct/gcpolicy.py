"""The daemon's garbage-collection policy: a full collection never rescans the table.

Every tracked entry is one object the cyclic collector knows of, and a full (generation 2)
collection walks them all while every thread waits for the GIL: 42 ms at 20,000 entries,
100 ms at 80,000 in one process, 14-33 ms in the mount at 20,000-35,000 (bench/trace/
knobtrace.py), and a knob write or a read that meets one waits that long.  The kernel's
table has no such pause.

The entries never need it: they hold no reference cycles and are freed by their reference
count when they expire or are dropped (tests/test_gcpolicy.py checks that an expired table
leaves nothing behind).  So after each full collection, when everything still tracked has
just been found reachable, the survivors are frozen (gc.freeze(): moved to the permanent
generation, which no collection scans); the next full collection walks only what was
promoted since.  The collector keeps running as before for everything else, and a cycle
made after a freeze is still found.  What freezing gives up: a frozen object that later
becomes part of a garbage cycle stays until unfreeze().  Entries do not (tested), and the
daemon's RSS on a full, churning table stays flat as without the policy (bench/RESULTS.md).

How much a full collection walks is then what was promoted since the last one.  Left to
itself, the collector waits until that is a quarter of what the last one kept, which for a
table growing from empty is all of it at first (15-25 ms at ~20,000 entries, measured).  So
the engine thread also calls step() between its holds of the engine lock: once a
generation-0 collection has promoted its survivors (into generation 1), it collects fully at
once, walking only those (at most the ~700 objects one generation-0 collection looks at),
and freezes them.  The generation-1 collections the collector would make of ten such sets
never come: each object is walked twice (its young collection, the full one) instead of
three times, in pauses as short as a young collection's.  Waiting for a generation-1
collection instead, as this policy first did, walked ten sets at once, twice: 2.4 and 1.8 ms
a pause at 50,000 packets/s (up to 6 and 23 ms in the mount), about once a second, which a
knob write's request met in about one write of a hundred (bench/RESULTS.md, round 14).
"""
from __future__ import annotations

import gc
from typing import Any, Dict

FULL = 2                    # the oldest generation: a collection of it is a full one
PROMOTED_TO = 1             # the generation a young (generation-0) collection promotes into


class FreezeAfterFullCollection:
    """install() once in the daemon; uninstall() undoes it (for tests)."""

    def __init__(self) -> None:
        self.freezes = 0

    def install(self) -> None:
        """Hook the collector, then collect and freeze what exists now (a restored table),
        so that the first full collection while serving does not walk it."""
        if self._on_collection not in gc.callbacks:
            gc.callbacks.append(self._on_collection)
        gc.collect()

    def uninstall(self) -> None:
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)
        gc.unfreeze()

    def step(self) -> None:
        """A full collection if a generation-0 collection promoted objects since the last
        one (cheap to ask: gc.get_count()'s middle number counts those collections)."""
        if gc.get_count()[PROMOTED_TO] > 0:
            gc.collect()

    def _on_collection(self, phase: str, info: Dict[str, Any]) -> None:
        # Called at the end of a full collection, before anything else runs: the younger
        # generations were merged into the oldest and every unreachable object freed, so
        # what is frozen is exactly what survived (no garbage cycle is frozen with it).
        if phase == "stop" and info["generation"] == FULL:
            gc.freeze()
            self.freezes += 1
