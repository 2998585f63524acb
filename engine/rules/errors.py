"""The one error the rules engine raises: iptables' message, the line it came from, its exit code."""
from __future__ import annotations

from typing import Optional

# iptables' exit codes: 1 for a refusal by the (emulated) kernel, 2 for a bad argument,
# 3 for an unknown table ("can't initialize iptables table").
EXIT_KERNEL = 1
EXIT_PARAMETER = 2
EXIT_TABLE = 3


class RulesError(ValueError):
    """A refused rule, ruleset or command. `line` is the 1-based input line, if any."""

    def __init__(self, message: str, line: Optional[int] = None,
                 exit_code: int = EXIT_PARAMETER) -> None:
        self.message = message
        self.line = line
        self.exit_code = exit_code
        super().__init__(f"line {line}: {message}" if line is not None else message)
