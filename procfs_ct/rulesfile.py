"""`--rules FILE` of replay and mount: an iptables-restore file, or one clear usage error;
where the mount puts LOG's lines; how a mount puts chains in front of its engine; the files
a mount with rules serves besides /proc's."""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

from engine.rules import RulesError, Ruleset
from engine.rules.procfiles import matches_text, tables_names_text, targets_text
from procfs_ct.tree import LISTING_MODE, View


def load_rules_file(path: str) -> Ruleset:
    """The ruleset of an iptables-restore file; UsageError (one line) if unreadable or refused."""
    from procfs_ct.errors import UsageError

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


# LOG's --log-level is a syslog level (0 emerg .. 7 debug): the daemon's log has these.
SYSLOG_TO_LOGGING = (logging.CRITICAL, logging.CRITICAL, logging.CRITICAL, logging.ERROR,
                     logging.WARNING, logging.INFO, logging.INFO, logging.DEBUG)


def log_sink(logger: logging.Logger) -> Callable[[int, str], None]:
    """Where the LOG target's lines go in the mount: `logger`, at their syslog level
    (the kernel writes them to its own log)."""
    def write(level: int, line: str) -> None:
        logger.log(SYSLOG_TO_LOGGING[min(max(level, 0), 7)], "%s", line)
    return write


def attach_chains(engine: Any, ruleset: Ruleset) -> Any:
    """Put `ruleset` at the hooks of a mount's engine (engine/chains.py): every frame goes
    through the chains from the next one on; LOG's lines go to the daemon's log."""
    from engine.chains import Chains
    from procfs_ct.daemon import log
    return Chains(engine, ruleset, log_sink=log_sink(log.getChild("LOG")))


def _whole(text: str) -> Iterator[bytes]:
    yield text.encode("ascii")


# /proc/net/ip_tables_*, -r--r----- as the kernel's: the tables of the mount's ruleset
# (newest first) and the extensions emulated (engine/rules/procfiles.py).
RULES_VIEWS = (
    View("net/ip_tables_names", LISTING_MODE,
         lambda served, now: _whole(tables_names_text(served.engine.chains.ruleset))),
    View("net/ip_tables_matches", LISTING_MODE, lambda served, now: _whole(matches_text())),
    View("net/ip_tables_targets", LISTING_MODE, lambda served, now: _whole(targets_text())),
)
