"""bench/worker.py's sender tasks: task_tap and task_blast_ceiling run bench/blast.py through
one helper, _blast(), which also says what CPU the sender process ran (getrusage's
RUSAGE_CHILDREN before and after it: a child counts there once it has been waited for).

The helper's arithmetic is checked with getrusage and the sender's process replaced by
fixed answers (which rusage it reads, and that it reads it around the sender's run); then
both tasks run for real, as bench/main.py's tap section runs them (`python -m bench.worker`
inside a throw-away namespace of bench/system.py with its DROP_RULESET), and must report
the fields that section prints.  Last, the listing's task_timecat and task_ttfb, which take
the paths in turns through one helper, _in_turns(), on real files with real cat and head."""
from __future__ import annotations

import json
import resource
import subprocess
from types import SimpleNamespace

import pytest

from bench import system, worker
from bench.common import worker as run_worker

# Before and after the sender's run; the worker's own rusage differs, to catch a mix-up.
CHILDREN = [SimpleNamespace(ru_utime=1.0, ru_stime=2.0), SimpleNamespace(ru_utime=1.5, ru_stime=2.25)]
SELF = SimpleNamespace(ru_utime=40.0, ru_stime=50.0)
SENT = {"sent": 1000, "seconds": 0.5, "end": 10.0}

# What bench/main.py's tap section (and its readers of the results) take from each task.
CEILING_FIELDS = {"sent", "seconds", "end", "sender", "user_cpu_us", "system_cpu_us"}
TAP_FIELDS = {"rate", "sender", "sent", "send_seconds", "kept", "kernel_drops", "tracked",
              "drain_end", "sustained", "tap_cpu_us", "reader_cpu_us", "spilled",
              "engine_cpu_us", "sender_cpu_us", "softirq_share", "entries", "early_drops",
              "fast_path", "switch_interval"}


@pytest.fixture
def fake_sender(monkeypatch) -> list:
    """The sender's process and getrusage replaced: what happened, in order."""
    events: list = []
    children = iter(CHILDREN)

    def getrusage(who: int) -> SimpleNamespace:
        events.append("children" if who == resource.RUSAGE_CHILDREN else "self")
        return next(children) if who == resource.RUSAGE_CHILDREN else SELF

    def run(command: list, **kwargs) -> subprocess.CompletedProcess:
        events.append(command[command.index("bench.blast"):])
        return subprocess.CompletedProcess(command, 0, "building\n" + json.dumps(SENT) + "\n", "")
    monkeypatch.setattr(worker.resource, "getrusage", getrusage)
    monkeypatch.setattr(worker.subprocess, "run", run)
    return events


def test_blast_returns_the_senders_result_and_the_children_cpu_around_its_run(fake_sender):
    result, cpu = worker._blast("0", "1000", "8", "2", "3", "packet")
    assert result == SENT
    assert cpu == worker.SenderCpu(user=0.5, system=0.25)
    assert fake_sender == ["children", ["bench.blast", "--sender", "packet", "0", "1000", "8",
                                        "2", "3"], "children"]


def test_the_ceiling_is_the_senders_result_and_its_cpu_a_datagram(fake_sender):
    result = worker.task_blast_ceiling("1000", "8", "2", "3", "socket")
    assert result == {**SENT, "sender": "socket", "user_cpu_us": 500.0, "system_cpu_us": 250.0}


def in_namespace(task: str, *args: object) -> dict:
    reason = system.available()
    if reason:
        pytest.skip(reason)
    with system.Namespace(ruleset=system.DROP_RULESET) as ns:
        return run_worker(task, *args, netns=ns.name, timeout=300)


@pytest.mark.kernel
def test_the_ceiling_task_reports_the_sender_alone_with_its_cpu():
    result = in_namespace("blast_ceiling", 3000, 8, 2, 3, "packet")
    assert set(result) == CEILING_FIELDS
    assert result["sent"] == 3000 and result["sender"] == "packet"
    assert result["user_cpu_us"] > 0 and result["system_cpu_us"] > 0


@pytest.mark.kernel
def test_the_tap_task_reports_the_tap_the_engine_and_the_senders_cpu():
    result = in_namespace("tap", 0, 3000, 8, 2, 3, "packet")
    assert set(result) == TAP_FIELDS
    assert result["sent"] == 3000 and result["sender"] == "packet"
    assert result["tracked"] + result["kernel_drops"] == 3000
    assert result["entries"] == 24                      # 3 source ports x lcm(8, 2) destinations
    assert result["sender_cpu_us"] > 0


# -- the listing's file tasks: cat and head -1 on the paths in turns ------------------------
def test_the_paths_take_turns_run_by_run(monkeypatch):
    monkeypatch.setattr(worker, "RUN_GAP", 0.0)    # the mount's render sharing is not here
    assert list(worker._in_turns("3", ("kernel", "ours"))) == ["kernel", "ours"] * 3


def test_timecat_and_ttfb_time_each_path_once_a_run(monkeypatch, tmp_path):
    monkeypatch.setattr(worker, "RUN_GAP", 0.0)
    paths = []
    for name, text in (("kernel", "a line\n" * 3), ("ours", "another\n")):
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    cats = worker.task_timecat("2", *paths)
    assert {path: len(times) for path, times in cats["seconds"].items()} == dict.fromkeys(paths, 2)
    assert cats["bytes"] == {paths[0]: 21, paths[1]: 8}
    first_bytes = worker.task_ttfb("3", *paths)
    assert {path: len(times) for path, times in first_bytes["seconds"].items()} == \
        dict.fromkeys(paths, 3)
    (tmp_path / "ours").write_text("")
    with pytest.raises(RuntimeError, match="empty"):
        worker.task_ttfb("1", *paths)
