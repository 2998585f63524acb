"""`--rules FILE` of replay and mount: an iptables-restore file, or one clear usage error."""
from __future__ import annotations

from engine.rules import RulesError, Ruleset


def load_rules_file(path: str) -> Ruleset:
    """The ruleset of an iptables-restore file; UsageError (one line) if unreadable or refused."""
    from .cli import UsageError

    try:
        with open(path, encoding="utf-8") as fileobj:
            text = fileobj.read()
    except OSError as exc:
        raise UsageError(f"--rules {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--rules {path}: not a text file") from None
    try:
        return Ruleset.load_restore(text)
    except RulesError as exc:
        raise UsageError(f"--rules {path}: {exc}") from None
