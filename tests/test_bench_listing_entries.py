"""bench/run's --listing-entries: the listing section at the table sizes asked for, a bad
list refused before anything runs."""
from __future__ import annotations

import argparse

import pytest

from bench import main as bench_main


def test_listing_entries_are_the_sizes_given_in_order():
    assert bench_main._entry_counts("65536") == (65536,)
    assert bench_main._entry_counts("65536,262144") == (65536, 262144)


@pytest.mark.parametrize("text", ["", "0", "65536,-1", "x", "65536,"])
def test_a_bad_list_of_entry_counts_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        bench_main._entry_counts(text)


def test_the_listing_section_walks_the_sizes_given(monkeypatch):
    """Only the sizes asked for are built (the section stops at its first table here)."""
    built = []

    class Stop(Exception):
        pass

    def shape_capture(shape: str, entries: int) -> str:
        built.append(entries)
        raise Stop
    monkeypatch.setattr(bench_main, "empty_mount_rss", lambda: 0)
    monkeypatch.setattr(bench_main.captures, "shape_capture", shape_capture)
    args = argparse.Namespace(quick=False, runs=3, listing_entries=(262144,))
    with pytest.raises(Stop):
        bench_main.bench_listing(args)
    assert built == [262144]


def test_a_bad_list_stops_bench_run_before_it_measures(capsys):
    with pytest.raises(SystemExit) as stopped:
        bench_main.main(["--only", "listing", "--listing-entries", "0", "--results", "-"])
    assert stopped.value.code == 2
    assert "entry counts must be positive" in capsys.readouterr().err
