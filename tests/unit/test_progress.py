"""Progress bars draw on a terminal only, and never change what the loop sees."""

import io
import sys

from merc import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_the_items_and_no_drawing(monkeypatch):
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    assert list(progress.steps(range(5), "work")) == [0, 1, 2, 3, 4]
    assert pipe.getvalue() == ""


def test_a_terminal_gets_a_bar_and_the_same_items(monkeypatch):
    tty = Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    assert list(progress.steps(iter(range(3)), "work", total=3)) == [0, 1, 2]
    assert "work" in tty.getvalue()
