"""The Optuna searcher (searchvlm.sweep._searcher), driven the way Tune drives it (no Ray
session): objective names, trial ids, repeats answered from their twin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.sweeps import repeat_space, study, tiny_space


def test_searcher_names_metrics_and_stores_trial_ids(tmp_path: Path):
    """The study names its objectives and each asked trial carries the searchvlm trial id
    (no Ray session needed: the searcher is driven the way Tune drives it)."""
    from searchvlm.schema.space import load_space
    from searchvlm.sweep._searcher import make_searcher

    space = load_space(tiny_space(tmp_path / "s.yaml", presets=["himix"], calibrated=False))
    db = tmp_path / "optuna.db"
    searcher = make_searcher(space, "s", str(db))
    config = searcher.suggest("a1b2c3d4")
    assert config["preset"] == "himix"
    searcher.suggest("e5f6a7b8")
    searcher.on_trial_complete("a1b2c3d4", {"final": True, "status": "ok", "flops_ratio": np.float32(0.5),
                                            "synergy_gain": np.float64(0.1)})  # fmt: skip
    st = study(tmp_path, "s")
    assert st.metric_names == ["flops_ratio", "synergy_gain"]
    got = {t.number: (t.state.name, t.user_attrs.get("searchvlm_trial_id")) for t in st.trials}
    assert got == {0: ("COMPLETE", "a1b2c3d4"), 1: ("RUNNING", "e5f6a7b8")}
    assert st.trials[0].values == pytest.approx([0.5, 0.1])
    again = make_searcher(space, "s", str(db))  # a second searcher on the study keeps the names
    assert again._ot_study.metric_names == ["flops_ratio", "synergy_gain"]


def test_searcher_answers_repeats_and_waits_for_running_twins(tmp_path: Path):
    """Driven as Tune drives it: a repeat of a running trial waits (suggest -> None, no new
    Optuna trial), is answered once the twin ends ok, and a failed twin is not reused."""
    from searchvlm.schema.space import load_space
    from searchvlm.schema.trial_result import TrialResult
    from searchvlm.sweep._searcher import make_searcher

    space = load_space(repeat_space(tmp_path / "s.yaml"))
    searcher = make_searcher(space, "s", str(tmp_path / "optuna.db"))
    first = searcher.suggest("a")
    assert "duplicate_of" not in first
    assert searcher.suggest("b") is None and searcher.suggest("c") is None  # waits for "a"
    assert len(study(tmp_path, "s").trials) == 2  # the waiting proposal holds its one trial
    res = TrialResult(status="ok", flops_ratio=0.5, synergy_gain=0.1)
    searcher.on_trial_complete("a", {"final": True, "status": "ok", "flops_ratio": 0.5, "synergy_gain": 0.1,
                                     "result_json": res.model_dump_json()})  # fmt: skip
    second = searcher.suggest("d")
    assert second["duplicate_of"] == "a" and second["optuna_number"] == 1
    assert TrialResult.model_validate_json(second["reuse_json"]) == res
    third = searcher.suggest("e")
    assert third["duplicate_of"] == "a" and third["optuna_number"] == 2
    attrs = {t.number: t.user_attrs for t in study(tmp_path, "s").trials}
    assert [(attrs[n].get("searchvlm_trial_id"), attrs[n].get("duplicate_of")) for n in range(3)] == [
        ("a", None),
        ("d", "a"),
        ("e", "a"),
    ]

    other = make_searcher(space, "s2", str(tmp_path / "optuna.db"))  # a twin that fails is retrained
    other.suggest("f")
    assert other.suggest("g") is None
    other.on_trial_complete("f", {"final": True, "status": "failed", "error": "boom"})
    retry = other.suggest("h")
    assert "duplicate_of" not in retry and other.twins.running == {other.twins.keys["h"]: "h"}
