"""The file tree under the mount point, as one table built from the engine's declarations.

Every file is either a listing (rendered from an engine view: net/...) or a knob
(one value of the knob registry: sys/...).  Directories are implied by the paths.
Modes follow /proc (spec/conntrack.md §1.3, §3): entry and expectation listings
0440, statistics 0444, writable knobs 0644, read-only knobs 0444, directories
0555, everything owned by root.  Adding a view or a knob adds its file here.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple

from engine.knobs import KNOBS, Knob

DIR, LISTING, KNOB = "dir", "listing", "knob"

DIR_MODE = 0o555
LISTING_MODE = 0o440          # /proc/net/nf_conntrack, ip_conntrack(_expect): -r--r----- root
STAT_MODE = 0o444             # /proc/net/stat/*: -r--r--r--
KNOB_MODE = 0o644
READONLY_KNOB_MODE = 0o444


@dataclass(frozen=True)
class Node:
    path: str                     # relative to the mount point, no leading slash ("" = root)
    kind: str                     # DIR / LISTING / KNOB
    mode: int                     # permission bits only
    view: Optional[str] = None    # LISTING: the engine view it renders
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


def listing_node(view: str) -> Node:
    mode = STAT_MODE if view.startswith("net/stat/") else LISTING_MODE
    return Node(view, LISTING, mode, view=view)


def knob_nodes(knob: Knob) -> Iterable[Node]:
    mode = READONLY_KNOB_MODE if knob.readonly else KNOB_MODE
    for path in knob.paths:
        yield Node(path, KNOB, mode, knob=knob.name, doc=knob.doc)


def build_tree(views: Iterable[str], knobs: Iterable[Knob] = KNOBS) -> Tree:
    nodes = [Node("", DIR, DIR_MODE)]
    nodes.extend(listing_node(view) for view in views)
    for knob in knobs:
        nodes.extend(knob_nodes(knob))
    return Tree(nodes)


def default_tree() -> Tree:
    """The tree of DESIGN.md: every engine view and every knob alias, plus the source counters."""
    from procfs_ct.views import VIEWS   # imported late: the tree is also built in tests
    from procfs_ct.driver import SOURCE_VIEW
    return build_tree(VIEWS + (SOURCE_VIEW,), KNOBS)


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
