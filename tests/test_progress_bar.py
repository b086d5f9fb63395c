"""Progress of long work (issue 34.3): a bar on a terminal, periodic log lines elsewhere."""

import io
import logging

import pytest

from ssl_retrieval import logs, progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def console():
    """The root logger at INFO with one handler writing to a file-like stream in the commands'
    format, as a command writing to a file (CI) has; removed afterwards."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs._Plain())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_a_terminal_gets_a_bar_redrawn_in_place(console):
    terminal, clock = Terminal(), Clock()
    bar = progress_bar.Bar(
        "retrieval", 10, "queries", every_seconds=60, stream=terminal, clock=clock
    )
    with bar:
        for _ in range(10):
            clock.now += 10
            bar.update(1, status="loss 0.5")
    shown = terminal.getvalue()
    assert "\r" in shown  # redrawn in place
    assert "retrieval: 100%" in shown and "10/10" in shown and "loss 0.5" in shown
    assert "queries/s" in shown
    assert shown.endswith("\n")  # work over a minute: the bar stays, as a line
    assert console.getvalue() == ""  # no log lines


def test_a_bar_of_short_work_goes_away_when_done(console):
    terminal = Terminal()
    with progress_bar.Bar("retrieval", total=3, stream=terminal) as bar:
        bar.update(3)
    shown = terminal.getvalue()
    assert shown.startswith("\rretrieval:") and shown.endswith("\r") and "\n" not in shown


def test_a_file_gets_a_line_every_interval_and_a_last_one(console):
    clock = Clock()
    bar = progress_bar.Bar("train", total=10, unit="steps", every_seconds=60, clock=clock)
    assert bar.stream is not console
    for _ in range(10):
        clock.now += 25
        bar.update(1, status="loss 0.5000")
    bar.close()
    lines = console.getvalue().splitlines()
    # 25 s a step: lines at 75 s (3 steps), 150 s (6), 225 s (9), and when done (10, 250 s).
    assert [line[11:] for line in lines] == [
        "train: 3/10 steps (30%) loss 0.5000, 01:15 elapsed, about 02:55 left",
        "train: 6/10 steps (60%) loss 0.5000, 02:30 elapsed, about 01:40 left",
        "train: 9/10 steps (90%) loss 0.5000, 03:45 elapsed, about 00:25 left",
        "train: 10/10 steps (100%) loss 0.5000, done in 04:10",
    ]
    assert all(line[:11].startswith("I ") for line in lines)
    assert "\r" not in console.getvalue()


def test_work_shorter_than_the_interval_logs_nothing_in_a_file(console):
    clock = Clock()
    with progress_bar.Bar("retrieval", total=4, clock=clock) as bar:
        for _ in range(4):
            clock.now += 10
            bar.update(1)
    assert console.getvalue() == ""


def test_an_unknown_total_counts_without_a_percentage(console):
    clock = Clock()
    bar = progress_bar.Bar("blend", unit="blends", every_seconds=1, clock=clock)
    clock.now += 2
    bar.update(300)
    assert console.getvalue().splitlines()[0][11:] == "blend: 300 blends, 00:02 elapsed"


def test_quiet_commands_show_no_bar(console):
    logging.getLogger().setLevel(logging.WARNING)  # --verbosity=-1
    terminal = Terminal()
    clock = Clock()
    with progress_bar.Bar("retrieval", total=3, stream=terminal, clock=clock) as bar:
        for _ in range(3):
            clock.now += 100
            bar.update(1)
    assert terminal.getvalue() == "" and console.getvalue() == ""


def test_log_lines_go_above_the_bar_and_not_through_their_handler(console, monkeypatch):
    terminal = Terminal()
    (handler,) = [h for h in logging.getLogger().handlers if getattr(h, "stream", 0) is console]
    monkeypatch.setattr(handler, "stream", progress_bar.sys.stderr)  # a console handler
    clock = Clock()
    with progress_bar.Bar("train", total=5, stream=terminal, clock=clock) as bar:
        bar.update(2)
        logging.info("train: step 2 validation recall@50 0.3")
        clock.now += 100
        bar.update(3)
    shown = terminal.getvalue()
    assert "train: step 2 validation recall@50 0.3\n" in shown
    assert shown.index("validation") < shown.rindex("5/5")  # the bar is drawn again below
    assert not handler.filters  # the bar's filter is gone with the bar


def test_a_bar_inside_another_goes_away_when_done(console):
    terminal = Terminal()
    with progress_bar.Bar("train", total=2, stream=terminal) as outer:
        with progress_bar.Bar("retrieval", total=1, stream=terminal) as inner:
            inner.update(1)
        assert not inner._bar and outer._bar.leave and progress_bar._ACTIVE == [outer]
    assert progress_bar._ACTIVE == []


def test_retrieval_over_the_corpus_logs_its_queries(console, monkeypatch):
    import numpy as np

    from ssl_retrieval.ranking import topk

    monkeypatch.setattr(progress_bar, "EVERY_SECONDS", 0.0)  # a line at every update
    items = np.eye(8, dtype=np.float32)
    topk.top_k(topk.embedding_scorer(items, items), np.arange(8), 8, 3, query_batch=3)
    lines = [line[11:] for line in console.getvalue().splitlines()]
    assert lines[:3] == [
        "retrieval: 3/8 queries (38%), 00:00 elapsed, about 00:00 left",
        "retrieval: 6/8 queries (75%), 00:00 elapsed, about 00:00 left",
        "retrieval: 8/8 queries (100%), 00:00 elapsed",
    ]
    assert lines[3] == "retrieval: 8/8 queries (100%), done in 00:00"


def test_training_shows_its_steps_losses_and_throughput(console, monkeypatch):
    from ssl_retrieval.compat import tf
    from ssl_retrieval.training import progress

    monkeypatch.setattr(progress_bar, "EVERY_SECONDS", 0.0)
    log = progress.ProgressLog(2, 10, tf.summary.create_noop_writer())
    state = progress.Progress(step=4, steps=8)  # resumed at step 4
    for loss in (1.5, 1.25, 1.0, float("nan")):
        state.step += 1
        state.values = [tf.constant(loss), tf.constant(loss), tf.constant(0.0)]
        if loss != loss:
            with pytest.raises(ValueError, match="loss is nan at step 8"):
                log.on_step_end(state)
        else:
            log.on_step_end(state)
    lines = [line[11:] for line in console.getvalue().splitlines()]
    assert lines[0].startswith("train: 5/8 steps (62%), 00:00 elapsed")
    assert lines[1].startswith("train: 6/8 steps (75%) loss 1.2500 main 1.2500 aux 0.0000, ")
    assert " examples/s, 00:00 elapsed, about 00:00 left" in lines[1]
    assert lines[-1].startswith("train: 7/8 steps (88%) loss 1.2500")  # no "done" line
    assert not any("done in" in line for line in lines)
    assert log.losses[0] != log.losses[0] and progress_bar._ACTIVE == []
