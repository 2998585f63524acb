"""The file tree under the mount point, as one table: each path with its behaviour.

Every file is either a listing (net/...: its node carries the function that renders
it) or a knob (sys/...: one value of the knob registry, read and written through
KnobValues by the knob's name).  Directories are implied by the paths.  Modes follow
/proc: entry and expectation listings 0440 (-r--r----- root:root, as observed on
/proc/net/nf_conntrack), statistics 0444, writable knobs 0644, read-only knobs
0444, directories 0555, everything owned by root.

Adding a listing is adding one entry to VIEWS (a path, a mode, a render function);
adding a knob is adding it to engine.knobs.KNOBS.  Nothing else dispatches on paths:
the engine knows no /proc path, the driver runs whatever render function it is given.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Tuple

from engine.knobs import KNOBS, Knob
from engine.render import listing_chunks, render_stat
from engine.render_expect import render_expect

DIR, LISTING, KNOB = "dir", "listing", "knob"

DIR_MODE = 0o555
LISTING_MODE = 0o440          # /proc/net/nf_conntrack, ip_conntrack(_expect): -r--r----- root
STAT_MODE = 0o444             # /proc/net/stat/*: -r--r--r--
KNOB_MODE = 0o644
READONLY_KNOB_MODE = 0o444


# A listing's renderer: (what is served, now) -> its text in chunks.  "What is served" is
# the driver: `.engine` (the Engine) and `.source_stats_text()` (its own counters).  The
# driver calls it, and pulls each chunk, under its engine lock.
Render = Callable[[Any, float], Iterator[bytes]]


@dataclass(frozen=True)
class Node:
    path: str                     # relative to the mount point, no leading slash ("" = root)
    kind: str                     # DIR / LISTING / KNOB
    mode: int                     # permission bits only
    render: Optional[Render] = None   # LISTING: makes its text
    knob: Optional[str] = None    # KNOB: canonical knob name
    doc: str = ""

    @property
    def writable(self) -> bool:
        return self.kind == KNOB and bool(self.mode & 0o200)

    @property
    def removal_errno(self) -> int:
        """What unlink/rmdir/rename-over answer: /proc/sys says EACCES, /proc/net EPERM (observed)."""
        return errno.EACCES if self.path == "sys" or self.path.startswith("sys/") else errno.EPERM


class Tree:
    """Path -> Node, plus each directory's entries in a stable order."""

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.nodes: Dict[str, Node] = {}
        children: Dict[str, list] = {}
        for node in nodes:
            if node.path in self.nodes:
                raise ValueError(f"two nodes claim {node.path!r}")
            self.nodes[node.path] = node
            self._add_parents(node.path, children)
        self.children: Dict[str, Tuple[str, ...]] = {
            path: tuple(sorted(names)) for path, names in children.items()}

    def _add_parents(self, path: str, children: Dict[str, list]) -> None:
        while path:
            parent, _, name = path.rpartition("/")
            siblings = children.setdefault(parent, [])
            if name in siblings:
                return                   # the rest of the chain is already there
            siblings.append(name)
            if parent not in self.nodes:
                self.nodes[parent] = Node(parent, DIR, DIR_MODE)
            path = parent

    def lookup(self, fuse_path: Optional[str]) -> Optional[Node]:
        """The node for a FUSE path ("/net/nf_conntrack"), or None."""
        if fuse_path is None:
            return None
        return self.nodes.get(fuse_path.strip("/"))

    def files(self) -> Iterable[Node]:
        """Every file (not directory), in declaration order (views, then knobs)."""
        return [n for n in self.nodes.values() if n.kind != DIR]


# -- the listings ---------------------------------------------------------------------------
def _whole(text: str) -> Iterator[bytes]:
    yield text.encode("ascii")


def entries(modern: bool) -> Render:
    """net/nf_conntrack (modern) or net/ip_conntrack: the table, chunk by chunk."""
    return lambda served, now: listing_chunks(served.engine.tracker, now, modern)


def statistics(modern: bool) -> Render:
    """net/stat/nf_conntrack (modern) or net/stat/ip_conntrack: one row per CPU."""
    return lambda served, now: _whole(render_stat(served.engine.tracker, modern,
                                                  served.engine.ncpu))


def expectations(modern: bool) -> Render:
    """net/nf_conntrack_expect (modern) or net/ip_conntrack_expect."""
    return lambda served, now: _whole(render_expect(served.engine.tracker, now, modern))


def source_counters(served: Any, now: float) -> Iterator[bytes]:
    """Not in /proc: what the traffic source and the engine thread counted."""
    return _whole(served.source_stats_text())


@dataclass(frozen=True)
class View:
    path: str
    mode: int
    render: Render


VIEWS: Tuple[View, ...] = (
    View("net/ip_conntrack", LISTING_MODE, entries(modern=False)),
    View("net/ip_conntrack_expect", LISTING_MODE, expectations(modern=False)),
    View("net/nf_conntrack", LISTING_MODE, entries(modern=True)),
    View("net/nf_conntrack_expect", LISTING_MODE, expectations(modern=True)),
    View("net/stat/ip_conntrack", STAT_MODE, statistics(modern=False)),
    View("net/stat/nf_conntrack", STAT_MODE, statistics(modern=True)),
    View("net/stat/procfs_ct_source", STAT_MODE, source_counters),
)
PROC_VIEWS = tuple(v for v in VIEWS if v.render is not source_counters)   # what /proc has


def listing_node(view: View) -> Node:
    return Node(view.path, LISTING, view.mode, render=view.render)


def knob_nodes(knob: Knob) -> Iterable[Node]:
    mode = READONLY_KNOB_MODE if knob.readonly else KNOB_MODE
    for path in knob.paths:
        yield Node(path, KNOB, mode, knob=knob.name, doc=knob.doc)


def build_tree(views: Iterable[View] = VIEWS, knobs: Iterable[Knob] = KNOBS) -> Tree:
    nodes = [Node("", DIR, DIR_MODE)]
    nodes.extend(listing_node(view) for view in views)
    for knob in knobs:
        nodes.extend(knob_nodes(knob))
    return Tree(nodes)


def default_tree() -> Tree:
    """Every listing of VIEWS (the source counters included) and every knob alias."""
    return build_tree(VIEWS, KNOBS)


def describe(tree: Tree) -> str:
    """The files served, for --help: one line per file, knob aliases grouped."""
    lines = ["files served under MOUNTPOINT (modes as /proc):"]
    for node in tree.files():
        if node.kind == LISTING:
            lines.append(f"  {oct(node.mode)[2:]}  {node.path}")
    by_knob: Dict[str, list] = {}
    for node in tree.files():
        if node.kind == KNOB:
            by_knob.setdefault(node.knob, []).append(node)
    for name, nodes in by_knob.items():
        first = nodes[0]
        lines.append(f"  {oct(first.mode)[2:]}  {first.path}  ({first.doc})")
        for alias in nodes[1:]:
            lines.append(f"        {alias.path}  (same value)")
    return "\n".join(lines)
