"""The engine views served under net/: each path bound to the render function that makes it.

The engine knows no /proc paths; this table is where they meet its renderers.  Each
function takes (engine, now) and yields the text in chunks (a listing walks its snapshot
one chunk per next(), so whoever holds the engine lock may let packets in between).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator

from engine.render import listing_chunks, render_expect, render_stat
from engine.rules.procfiles import matches_text, tables_names_text, targets_text

Render = Callable[[Any, float], Iterator[bytes]]


def _once(text: str) -> Iterator[bytes]:
    yield text.encode("ascii")


ENGINE_VIEWS: Dict[str, Render] = {
    "net/ip_conntrack": lambda engine, now: listing_chunks(engine.tracker, now, False),
    "net/ip_conntrack_expect": lambda engine, now: _once(render_expect(engine.tracker, False)),
    "net/nf_conntrack": lambda engine, now: listing_chunks(engine.tracker, now, True),
    "net/nf_conntrack_expect": lambda engine, now: _once(render_expect(engine.tracker, True)),
    "net/stat/ip_conntrack": lambda engine, now: _once(render_stat(engine.tracker, False,
                                                                   engine.ncpu)),
    "net/stat/nf_conntrack": lambda engine, now: _once(render_stat(engine.tracker, True,
                                                                   engine.ncpu)),
}
VIEWS = tuple(ENGINE_VIEWS)

# Served when the mount has rules (`mount --rules FILE`): the tables of its ruleset and the
# extensions emulated, as /proc/net/ip_tables_* with ip_tables loaded.
RULES_VIEWS: Dict[str, Render] = {
    "net/ip_tables_names": lambda engine, now: _once(tables_names_text(engine.chains.ruleset)),
    "net/ip_tables_matches": lambda engine, now: _once(matches_text()),
    "net/ip_tables_targets": lambda engine, now: _once(targets_text()),
}
