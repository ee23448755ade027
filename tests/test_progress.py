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


def test_a_step_that_does_not_advance_still_says_it_is_running(capsys):
    """eval RUN and train's held-out check answer every prompt in one batch: nothing was printed for minutes, as if
    the command had hung. Once started, the bar says an unfinished task every interval by itself."""
    import time

    bar = LogProgress(interval=0.1)
    bar.start()
    bar.add_task("held-out check: answering", total=None)
    time.sleep(0.55)
    bar.stop()
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) >= 3 and all(x.startswith("held-out check: answering (") for x in lines), lines  # no count
    time.sleep(0.25)
    assert capsys.readouterr().err == ""  # a stopped bar says nothing more


def test_without_a_terminal_lines_are_not_wrapped_and_keep_their_prefix(capsys):
    """rich wrapped at 80 columns in a log and split the command a line tells the user to paste; it dropped the
    "[alignlab]" prefix as a style tag."""
    from alignlab.progress import console

    command = "alignlab train sft --resume /tmp/a/long/path/to/the/project/runs/20261207-081358-round3-dpo"
    console.print(f"[yellow]interrupted[/]: continue with `{command}` (it runs 2 processes again)")
    console.print("[alignlab] plan: peak about 0.81 GiB of 19 GiB, about 0.01 s per step, 5000 steps = 34 s on this CPU")
    console.print("[alignlab] as written", markup=False)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"interrupted: continue with `{command}` (it runs 2 processes again)"
    assert lines[1].startswith("[alignlab] plan: peak") and lines[1].endswith("on this CPU") and len(lines) == 3
    assert lines[2] == "[alignlab] as written"
