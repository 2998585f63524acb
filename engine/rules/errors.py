"""The one error the rules engine raises: iptables' message, the line it came from, its exit code."""
from __future__ import annotations

from typing import Optional

# iptables' exit codes: 1 for a refusal by the (emulated) kernel, 2 for a bad argument,
# 3 for an unknown table ("can't initialize iptables table").
EXIT_KERNEL = 1
EXIT_PARAMETER = 2
EXIT_TABLE = 3


IPTABLES_VERSION = "v1.8.9"
# What iptables says when the kernel refuses a rule with EINVAL, or a loop with ELOOP:
# iptables-restore only learns of these when it commits the table.
EINVAL_MESSAGE = "Invalid argument. Run `dmesg' for more information."
ELOOP_MESSAGE = "Too many levels of symbolic links."
KERNEL_CHECKS = (EINVAL_MESSAGE, ELOOP_MESSAGE)
# iptables prints these with a blank line before its "Try" hint (their text ends in \n).
_TRAILING_NEWLINE = ("Couldn't load", "Can't use -", "multiport: option")


class RulesError(ValueError):
    """A refused rule, ruleset or command.

    `message` is what iptables prints, `exit_code` its exit status, `line` the 1-based input
    line of a restore. `detail` says why where iptables only relays the kernel's EINVAL
    ("Run `dmesg' for more information": the emulation has no dmesg, so it says it here).
    """

    def __init__(self, message: str, line: Optional[int] = None,
                 exit_code: int = EXIT_PARAMETER, detail: str = "") -> None:
        self.message = message
        self.line = line
        self.exit_code = exit_code
        self.detail = detail
        text = f"{message} ({detail})" if detail else message
        super().__init__(f"line {line}: {text}" if line is not None else text)


def error_text(err: RulesError, program: str = "iptables") -> str:
    """The stderr iptables gives for this error (a refusal by the kernel: `iptables: ...`;
    a bad argument: `iptables v1.8.9 (legacy): ...` and the help hint)."""
    if err.exit_code == EXIT_KERNEL:
        return f"{program}: {err.message}\n"
    hint = f"Try `{program} -h' or '{program} --help' for more information.\n"
    if err.exit_code == EXIT_TABLE:
        hint = "Perhaps iptables or your kernel needs to be upgraded.\n"
    if err.message.startswith("Bad argument"):
        return f"{err.message}\n{hint}"
    blank = "\n" if err.message.startswith(_TRAILING_NEWLINE) else ""
    return f"{program} {IPTABLES_VERSION} (legacy): {err.message}\n{blank}{hint}"


def restore_error_text(err: RulesError, program: str = "iptables-restore") -> str:
    """The stderr iptables-restore gives for a refused load."""
    if err.message in KERNEL_CHECKS:
        return f"{program}: line {err.line} failed\n"
    if err.message == "COMMIT expected":
        return f"{program}: COMMIT expected at line {err.line}\n"
    if err.message.startswith("Can't set policy"):
        return f"{program} {IPTABLES_VERSION} (legacy): {err.message}\n"
    blank = "\n" if err.message.startswith(_TRAILING_NEWLINE) else ""
    prefix = "" if err.message.startswith("Bad argument") else \
        f"{program} {IPTABLES_VERSION} (legacy): "
    return (f"{prefix}{err.message}\n{blank}Error occurred at line: {err.line}\n"
            f"Try `{program} -h' or '{program} --help' for more information.\n")
