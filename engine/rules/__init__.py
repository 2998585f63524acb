"""The iptables rules engine in front of the state machine: raw, mangle and filter tables,
user chains, matches and targets, counters; iptables-restore/-save and the command line.

Pure (sans-IO): no sockets, files, clock or threads; the time is an argument.

    rs = Ruleset.load_restore(text)                       # RulesError(line=...) if refused
    v = rs.run_hook("INPUT", RulePacket(...), now)        # HookVerdict: verdict, mark, logs...
    rs.save(counters=True)                                # iptables-save -c text
    apply_command(rs, ["-A", "INPUT", "-j", "DROP"])      # the iptables command line
"""
from .commands import apply_command
from .errors import RulesError
from .packet import RulePacket
from .ruleset import HookVerdict, Ruleset
from .tables import CONNTRACK_PRIORITY, HOOKS

__all__ = ["Ruleset", "RulePacket", "HookVerdict", "RulesError", "apply_command",
           "CONNTRACK_PRIORITY", "HOOKS"]
