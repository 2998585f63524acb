"""The README's knob table is derived from the registry, never edited apart from it."""
from pathlib import Path

from procfs_ct.knobdoc import BEGIN, END, knob_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_knob_table_is_the_generated_one():
    text = README.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END) + 1
    assert text[start:end] == knob_table(), "run: python3 -m procfs_ct.knobdoc"


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "./mount.sh" in text and "tests/run.sh" in text
