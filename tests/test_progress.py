"""Progress without a terminal: plain lines a log file shows (rich draws no live bar there, so nothing showed)."""

from __future__ import annotations

from alignlab.progress import LogProgress, progress_bar


def test_without_a_terminal_long_steps_print_plain_lines(capsys, monkeypatch):
    monkeypatch.delenv("ALIGNLAB_QUIET")  # the tests' conftest quiets every bar
    bar = progress_bar()  # pytest's stderr is no terminal
    assert isinstance(bar, LogProgress)
    bar.interval = 0.0
    bar.start()
    task = bar.add_task("train dpo", total=3, loss="-")
    for step in range(1, 4):
        bar.update(task, completed=step, loss=f"{0.7 - 0.1 * step:.4f}")
    bar.stop()
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert lines[0].startswith("train dpo: 0/3") and lines[-1].startswith("train dpo: 3/3") and "loss 0.4000" in lines[-1]
    assert len(lines) == 4


def test_lines_come_at_most_once_an_interval_and_at_the_end(capsys):
    bar = LogProgress(interval=3600)
    task = bar.add_task("sample", total=100)
    for _ in range(100):
        bar.advance(task)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert [x.split(" (")[0] for x in lines] == ["sample: 0/100", "sample: 100/100"]
