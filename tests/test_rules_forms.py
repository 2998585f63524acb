"""Every rule form and command the engine parses, against what iptables-legacy printed for it
on this machine (tests/data/rules/forms.json, made by tests/kernel/rules_forms.py): the
iptables-save line of each accepted rule byte for byte, the message and exit code of each
refused one, the output of a sequence of commands (-N -X -E -A -I -R -D -F -Z -P -S -L), and
iptables-restore's verdict on a set of inputs (its stderr byte for byte when it refuses).
One difference is deliberate: iptables-restore commits table by table, so a failure in the
second table leaves the first one loaded; the engine's restore is all or nothing.
"""
from __future__ import annotations

import json
import shlex

import pytest

from engine.rules import RulesError, Ruleset, apply_command
from engine.rules.errors import error_text, restore_error_text
from ruleshelp import DATA

FORMS = json.loads((DATA / "forms.json").read_text())


def _no_blank_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line)


def _form_id(form: dict) -> str:
    return f"{form['table']}:{form['spec']}"


@pytest.mark.parametrize("form", FORMS["forms"], ids=_form_id)
def test_rule_form_saves_or_fails_as_iptables(form):
    rs = Ruleset()
    argv = ["-t", form["table"], "-A", form["chain"], *shlex.split(form["spec"])]
    if form["rc"] == 0:
        apply_command(rs, argv)
        saved = [line for line in rs.save(counters=False).splitlines() if line.startswith("-A ")]
        assert saved[-1] == form["saved"]
    else:
        with pytest.raises(RulesError) as caught:
            apply_command(rs, argv)
        assert caught.value.exit_code == form["rc"]
        assert _no_blank_lines(error_text(caught.value)) == _no_blank_lines(form["stderr"])


@pytest.mark.parametrize("case", FORMS["restores"], ids=lambda c: c["input"].split("\n")[1][:40])
def test_restore_succeeds_or_fails_as_iptables_restore(case):
    rs = Ruleset()
    if case["rc"] == 0:
        assert rs.restore(case["input"]).save(table="filter") == case["save"]
    else:
        with pytest.raises(RulesError) as caught:
            rs.restore(case["input"])
        assert (caught.value.exit_code, restore_error_text(caught.value)) == \
            (case["rc"], case["stderr"])


def test_a_refused_rule_changes_nothing():
    rs = Ruleset.load_restore("*filter\n-A INPUT -p tcp -j ACCEPT\nCOMMIT\n")
    before = rs.save()
    for spec in ("-p tcp --dport 99999", "-j REJECT --reject-with tcp-reset", "-m foo"):
        with pytest.raises(RulesError):
            apply_command(rs, ["-A", "INPUT", *shlex.split(spec)])
    assert rs.save() == before


def test_command_sequence_as_iptables():
    rs = Ruleset()
    for step in FORMS["commands"]:
        argv = shlex.split(step["argv"])
        if argv[:2] == ["-t", "nat"]:
            with pytest.raises(RulesError, match="nat is not emulated"):
                apply_command(rs, argv)
            continue
        try:
            out = apply_command(rs, argv)
        except RulesError as err:
            assert (err.exit_code, _no_blank_lines(error_text(err))) == \
                (step["rc"], _no_blank_lines(step["stderr"])), step["argv"]
        else:
            assert (0, out) == (step["rc"], step["stdout"]), step["argv"]
