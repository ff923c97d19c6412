"""The trainable's profile hook (benchmarks/trial_profile.py): stats per trial, env restored."""

from __future__ import annotations

import os
import pstats
from pathlib import Path

import pytest

from searchvlm.sweep import _trainable


def test_profiled_call_writes_stats_and_restores_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_trainable.PROFILE_ENV, str(tmp_path))
    seen = []

    def body(config, x):  # runs the plain path: the variable is unset inside
        seen.append((config, x, os.environ.get(_trainable.PROFILE_ENV)))
        return sum(i * i for i in range(1000))

    config = {"optuna_number": 3, "preset": "himix"}
    _trainable._profiled(body, config, 7)
    assert seen == [(config, 7, None)]
    assert os.environ[_trainable.PROFILE_ENV] == str(tmp_path)
    stats = pstats.Stats(str(tmp_path / f"{_trainable.trial_name({'optuna_number': 3, 'preset': 'himix'})}.prof"))
    assert any(name == "body" for _, _, name in stats.stats)  # type: ignore[attr-defined]
