"""The --state-file: the table and the writable knobs, saved and restored.

The file is JSON: the engine's export_state() document (format, version, profile,
saved_at, entries) with a "knobs" object beside it.  It is always replaced whole
(temporary file, fsync, rename, fsync of the directory), so a crash or a power loss
leaves the previous file or the new one, never a mix.  A daemon saves it every
`interval` seconds from a thread of its own (StateSaver) and once more when it stops.

Restoring checks every field as strictly as a write to the file it came from: each
knob through the knob's own parser and range (KnobValues.write_text, as `echo V >
knob` would), the table through Engine.import_state.  A file that fails any check is
not used at all: it is set aside as PATH.bad and the daemon starts empty.  Values the
command line gave (--max) beat the file's.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, ContextManager, Dict, Iterable, Iterator, List, Optional

from engine.knobs import KNOBS, KNOBS_BY_NAME, KnobValues, KnobWriteError

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0          # seconds between periodic saves (--state-interval)
BAD_SUFFIX = ".bad"             # where a file that failed its checks is set aside
SHOWN_VALUE = 40                # characters of a refused value quoted in the message


class StateFileError(Exception):
    """The file cannot be used; the message is one line naming the field and its value."""


@dataclass
class Restored:
    entries: int                        # table entries put back
    saved_at: Optional[float]           # when the file was written (None: knobs-only file)
    knobs: Dict[str, int]               # knob values applied


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= SHOWN_VALUE else text[:SHOWN_VALUE] + "..."


def read_document(path: str) -> Optional[dict]:
    """The file's JSON object; None if there is no file.  Raises StateFileError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(exc.strerror) from None
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise StateFileError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise StateFileError("not a procfs-ct state file")
    return document


def checked_knobs(document: dict, profile: str) -> Dict[str, int]:
    """The file's knob values, each parsed and range-checked as a write to its file."""
    knobs = document.get("knobs", {})
    if not isinstance(knobs, dict):
        raise StateFileError(f"knobs: {_shown(knobs)}: not an object")
    scratch = KnobValues(profile, ram_bytes=0)      # parses and checks; holds nothing real
    values: Dict[str, int] = {}
    for name, value in knobs.items():
        where = f"knobs.{name}: {_shown(value)}"
        if name not in KNOBS_BY_NAME:
            raise StateFileError(f"{where}: no such knob")
        # The file holds what a read of the knob showed; true, 1.5 or "7" never came
        # from one (json gives bool for true, which would pass as an int).
        if type(value) is not int:
            raise StateFileError(f"{where}: not an integer")
        text = str(value).encode("ascii")
        try:
            taken = scratch.write_text(name, text, 0)
        except KnobWriteError as exc:
            raise StateFileError(f"{where}: {exc}") from None
        if taken != len(text):
            raise StateFileError(f"{where}: not one number")
        values[name] = scratch[name]
    return values


def restore(path: str, engine: Any, now: float, keep: Collection[str] = ()) -> Restored:
    """Restore the table and the knobs saved in `path` into a fresh engine.

    A missing file is a fresh start.  Knobs named in `keep` (given on the command line)
    keep the engine's value.  Raises StateFileError, having changed nothing, if any
    field fails its check.  A file holding only {"knobs": ...} (written before the
    table was kept) restores the knobs alone.
    """
    document = read_document(path)
    if document is None:
        return Restored(0, None, {})
    knobs = checked_knobs(document, engine.profile)
    entries, saved_at = 0, None
    if set(document) != {"knobs"}:
        try:
            entries = engine.import_state(document, now)
        except ValueError as exc:
            raise StateFileError(str(exc)) from None
        saved_at = float(document["saved_at"])
    applied = {}
    for name, value in knobs.items():
        if name not in keep:
            engine.knobs.write_text(name, str(value).encode("ascii"), 0)
            applied[name] = value
    return Restored(entries, saved_at, applied)


def set_aside(path: str) -> str:
    """Rename a refused file to PATH.bad (replacing an older one); the new name."""
    bad = path + BAD_SUFFIX
    os.replace(path, bad)
    return bad


EXPORT_SLICE = 4096     # entries exported per hold of the engine lock, and per json call


def header_of(engine: Any, now: float) -> dict:
    """The document without its entries: format, version, profile, saved_at and the
    writable knob values.  The caller holds the engine lock."""
    header = engine.state_header(now)
    header["knobs"] = {k.name: engine.knobs[k.name] for k in KNOBS if not k.readonly}
    return header


def encoded(header: dict, slices: Iterable[List[dict]]) -> Iterator[str]:
    """The document's JSON text in pieces: the header's keys, then "entries" a slice of
    records at a time.  One json call over the whole table would hold the GIL for the
    whole encoding (a second and more at 262,144 entries), stalling every reader."""
    head = json.dumps(header, sort_keys=True)
    yield head[:-1] + (", " if header else "") + '"entries": ['
    first = True
    for records in slices:
        if records:
            text = json.dumps(records)[1:-1]
            yield text if first else ", " + text
            first = False
    yield "]}\n"


def write_document(path: str, pieces: Iterable[str]) -> None:
    """Replace `path` atomically and durably with the text of `pieces`: a crash leaves
    the old file or the new one."""
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name[:200]}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            for piece in pieces:
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)        # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_sliced(path: str, engine: Any, lock: ContextManager, now: Callable[[], float]) -> int:
    """Save `engine` to `path`; the entries saved.  The lock is held to take the header and
    the list of entries, then once per EXPORT_SLICE entries while they are exported
    (entries gone meanwhile are skipped: the file is a snapshot at most one save old
    anyway); the encoding and the disk writes run without it, so packets keep flowing."""
    with lock:
        saved_at = now()
        header = header_of(engine, saved_at)
        entries = engine.tracker.live_entries()
    saved = 0

    def slices() -> Iterator[List[dict]]:
        nonlocal saved
        for first in range(0, len(entries), EXPORT_SLICE):
            with lock:
                records = engine.tracker.export_records(
                    entries[first:first + EXPORT_SLICE], saved_at)
            saved += len(records)
            yield records

    write_document(path, encoded(header, slices()))
    return saved


def save(path: str, engine: Any, now: float) -> int:
    """Save `engine` (not running: no lock needed) to `path`; the entries saved."""
    return save_sliced(path, engine, contextlib.nullcontext(), lambda: now)


class StateSaver:
    """Saves the state file every `interval` seconds until stopped (0: never; the caller
    saves at stop), with save_sliced: the engine lock is held a slice at a time."""

    def __init__(self, path: str, engine: Any, lock: Any, now: Callable[[], float],
                 interval: float) -> None:
        self.path = path
        self._engine = engine
        self._lock = lock
        self._now = now
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="procfs-ct-state", daemon=True)
        self.saves = 0

    def start(self) -> None:
        if self._interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def save_now(self) -> int:
        """One save; the entries saved."""
        count = save_sliced(self.path, self._engine, self._lock, self._now)
        self.saves += 1
        return count

    def _run(self) -> None:
        # On a fixed cadence (not `interval` after the end of the last save), so a save
        # is never more than one interval old.
        next_save = time.monotonic() + self._interval
        while not self._stop.wait(max(0.0, next_save - time.monotonic())):
            next_save = max(next_save + self._interval, time.monotonic())
            try:
                count = self.save_now()
                log.debug("saved %d entries to %s", count, self.path)
            except (OSError, ValueError) as exc:
                log.error("could not save %s: %s", self.path, exc)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
