"""A trainer's report names the command that reproduces it, however it was started."""

import sys

from merc.training.artifacts import command_line


def test_the_cli_hands_the_arguments_over(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/merc", "train", "fusion", "--tier", "mpnet"])
    assert command_line("merc train fusion", ["--tier", "mpnet", "--threads", "1"]) == "merc train fusion --tier mpnet --threads 1"


def test_run_as_a_module_every_argument_is_kept(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/work/services/merc/training/text.py", "--base", "mpnet", "--note", "two words"])
    assert command_line("merc train text", None) == "merc train text --base mpnet --note 'two words'"
    monkeypatch.setattr(sys, "argv", ["text.py"])
    assert command_line("merc train text", None) == "merc train text"
