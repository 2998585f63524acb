"""net/procfs_ct_iptables: the control channel of `procfs-ct iptables|iptables-save|iptables-restore`.

Not in /proc.  Mode 0600, root.  A writer opens the file read-write, writes one request (a
JSON object) and reads the reply back on the same descriptor; the request is applied when
the first read after the write comes, under the engine lock, to the live ruleset:

  {"op": "command", "argv": [...]}                       iptables ARGS
  {"op": "restore", "text": "...", "noflush": b, "counters": b}   iptables-restore
  {"op": "save", "counters": b, "table": null|"filter"}  iptables-save

The reply is {"stdout": str, "stderr": str, "exit": int}: iptables' own texts and status.
A restore is atomic (a refused one leaves the ruleset as it was).

Every mount has the channel.  A mount started without --rules has no chains yet (its frames
go straight to conntrack): the first command or restore that succeeds attaches them, from an
empty ruleset whose tables appear, ACCEPT policies, as iptables touches them (as the
kernel's iptable_* modules load); a refused one attaches nothing.
"""
from __future__ import annotations

import json
from typing import Any, Dict

from engine.rules import RulesError, Ruleset
from engine.rules.commands import apply_command
from engine.rules.errors import error_text, restore_error_text

CHANNEL_PATH = "net/procfs_ct_iptables"
CHANNEL_MODE = 0o600
BAD_REQUEST_EXIT = 2


def _reply(stdout: str = "", stderr: str = "", code: int = 0) -> bytes:
    return json.dumps({"stdout": stdout, "stderr": stderr, "exit": code}).encode("utf-8")


def handle_request(served: Any, request: bytes) -> bytes:
    """Apply one request to `served.engine.chains` (the caller holds the engine lock)."""
    try:
        req: Dict[str, Any] = json.loads(request.decode("utf-8"))
        op = req["op"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return _reply(stderr="procfs-ct: bad request on the iptables channel\n",
                      code=BAD_REQUEST_EXIT)
    engine = served.engine
    ruleset = Ruleset() if engine.chains is None else engine.chains.ruleset
    if op == "command":
        try:
            out = apply_command(ruleset, list(req.get("argv", [])))
        except RulesError as exc:
            return _reply(stderr=error_text(exc), code=exc.exit_code)
        _install(engine, ruleset)
        return _reply(stdout=out)
    if op == "restore":
        try:
            ruleset = ruleset.restore(req.get("text", ""), counters=bool(req.get("counters")),
                                      noflush=bool(req.get("noflush")))
        except RulesError as exc:
            return _reply(stderr=restore_error_text(exc), code=exc.exit_code)
        _install(engine, ruleset)
        return _reply()
    if op == "save":
        try:
            out = ruleset.save(counters=bool(req.get("counters")), table=req.get("table"))
        except RulesError as exc:
            return _reply(stderr=error_text(exc, "iptables-save"), code=exc.exit_code)
        return _reply(stdout=out)
    return _reply(stderr=f"procfs-ct: unknown op {op!r}\n", code=BAD_REQUEST_EXIT)


def _install(engine: Any, ruleset: Ruleset) -> None:
    """`ruleset` at the engine's hooks from the next packet on (the caller holds the lock)."""
    if engine.chains is None:
        from procfs_ct.rulesfile import attach_chains
        attach_chains(engine, ruleset)
        return
    engine.chains.ruleset = ruleset
    engine.chains.ruleset_changed()


def _node() -> Any:
    from procfs_ct.tree import CONTROL, Node
    return Node(CHANNEL_PATH, CONTROL, CHANNEL_MODE, control=handle_request)


IPTABLES_CHANNEL = _node()
