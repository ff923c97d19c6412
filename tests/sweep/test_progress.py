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
