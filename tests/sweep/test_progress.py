"""The sweep's progress view (searchvlm.sweep._progress): plain event lines off a terminal,
a live panel with an ETA on one."""

from __future__ import annotations


def test_progress_lines_off_a_terminal_and_eta_on_one():
    import io

    from rich.console import Console

    from searchvlm.sweep._progress import LiveView, clock

    assert [clock(s) for s in (None, 4.4, 65, 3725)] == ["?", "4s", "1m05s", "1h02m"]
    buf = io.StringIO()
    view = LiveView("s", 4, Console(file=buf, width=80))
    assert view.plain  # a StringIO is no terminal
    done = {"trial_id": "a", "number": 0, "status": "ok", "flops_ratio": 0.5, "synergy_gain": -0.0123}
    view.start([done])  # one trial recorded before this session (a resume): not counted in the ETA
    view._t0 -= 10.0
    view.trial_started([done], "t0001 (b)", 1)
    row = {**done, "trial_id": "b", "number": 1, "flops_ratio": 0.25, "synergy_gain": 0.5}
    view.trial_finished([done, row], "t0001 (b)", row, 0)
    failed = {"trial_id": "c", "number": 2, "status": "failed", "error": "OOM"}
    view.trial_finished([done, row, failed], "t0002 (c)", failed, 0)
    view.stop([done, row, failed])
    lines = buf.getvalue().splitlines()
    assert lines[0].endswith("sweep s: started, 1/4 trials recorded")
    assert "trial t0001 (b) started; 1/4 done (1 ok, 0 failed, 0 pruned), 1 running, elapsed 10s, ETA ?" in lines[1]
    assert "trial t0001 (b) ok: flops_ratio 0.2500, synergy_gain +0.5000; 2/4 done" in lines[2]
    assert lines[2].endswith("elapsed 10s, ETA 20s")  # 10 s for 1 trial this session, 2 to go
    assert "trial t0002 (c) failed: OOM; 3/4 done (2 ok, 1 failed, 0 pruned)" in lines[3]
    assert lines[4].split("] ", 1)[1].startswith("sweep s: ended; 3/4 done")
    term = io.StringIO()
    live = LiveView("s", 4, Console(file=term, width=120, force_terminal=True))
    assert not live.plain
    live.start([done])
    live._t0 -= 10.0
    live.trial_finished([done, row], "t0001 (b)", row, 0)
    head = live._render([done, row], 1).renderables[0]
    assert "2/4 done" in head and "elapsed 10s, ETA 20s" in head
    live.stop([done, row])
    assert "sweep s: started" not in term.getvalue()  # the terminal gets the panel, not event lines


def test_library_logs_print_whole_lines_above_the_live_view(tmp_path, capfd):
    """Optuna's and Ray's handlers hold the stderr of their set-up: on a terminal their lines
    would land inside the live panel. Routed, a warning is one whole line above the panel
    (through the live view's stderr proxy) and INFO chatter goes to sweep.log only."""
    import io
    import logging
    import re

    import optuna
    from rich.console import Console

    from searchvlm.sweep._logs import routed_logs
    from searchvlm.sweep._progress import LiveView

    optuna_logger = optuna.logging.get_logger("optuna")
    before, verbosity = optuna_logger.handlers[:], optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.INFO)  # optuna's default (other tests may have quietened it)
    term = io.StringIO()
    view = LiveView("s", 4, Console(file=term, width=60, force_terminal=True, soft_wrap=True))
    row = {"trial_id": "a", "number": 0, "status": "ok", "flops_ratio": 0.5, "synergy_gain": -0.0123}
    long = "x" * 90  # longer than the terminal: still one line (the terminal wraps it, not rich)
    with routed_logs(tmp_path / "sweep.log") as log_file:
        view.start([])
        optuna.logging.get_logger("optuna.study").info("A new study created in RDB with name: s")
        logging.getLogger("ray.tune").warning("trial %s is slow", long)
        view.trial_finished([row], "t0000 (a)", row, 0)
        view.stop([row])
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", term.getvalue())  # drop cursor moves and colours
    lines = [ln.strip() for ln in re.split(r"[\r\n]", text)]
    assert f"WARNING ray.tune: trial {long} is slow" in lines, text
    assert "A new study created" not in text
    logged = log_file.read_text()
    assert "INFO optuna.study: A new study created in RDB with name: s" in logged and "trial xxx" in logged
    assert "is slow" not in capfd.readouterr().err  # nothing reached the real stream under the panel
    assert optuna_logger.handlers == before  # restored after the sweep
    optuna.logging.set_verbosity(verbosity)
