"""The training progress bar: no "loss nan" before the first logged step, and each step shows its own loss."""

from __future__ import annotations

from transformers import TrainerState

from alignlab.train.callbacks import RichProgressCallback, loss_text


def _fields(cb):
    task = cb.bar.tasks[0]
    return task.completed, task.fields["loss"], task.fields["tps"]


def test_bar_shows_each_steps_own_loss_and_no_nan_before_the_first():
    cb, state = RichProgressCallback("dpo"), TrainerState(max_steps=3, global_step=0)
    cb.on_train_begin(None, state, None)
    try:
        assert _fields(cb) == (0, "-", "")
        for step, loss in ((1, 0.6931), (2, 0.5)):
            state.global_step = step
            cb.on_step_end(None, state, None)  # transformers: step end, then that step's log
            cb.on_log(None, state, None, logs={"loss": loss, "tokens_per_s": 120.4})
            assert _fields(cb) == (step, f"{loss:.4f}", "120 tok/s")
    finally:
        cb.on_train_end(None, state, None)


def test_loss_text():
    assert loss_text(0.12345) == "0.1235" and loss_text(float("nan")) == "nan" and loss_text(None) == "-"
