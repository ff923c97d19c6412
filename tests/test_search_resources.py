"""`search.gpus_per_trial` and `search.concurrency: auto` (L0: no Ray here): how many trials
a cluster runs at once, Ray's whole-number rule above one GPU, and spaces that do not use
the new settings keep their serialisation and hash."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from searchvlm.schema.search import SearchSettings
from searchvlm.schema.space import SearchSpace


@pytest.mark.parametrize(
    ("cpus", "gpus", "cluster", "want"),
    [
        (1, 1.0, {"CPU": 4, "GPU": 2}, 2),  # GPUs bound it
        (1, 0.5, {"CPU": 4, "GPU": 2}, 4),
        (2, 0.125, {"CPU": 16, "GPU": 1}, 8),  # CPUs and GPUs both allow 8: 1 / 0.125 is not 7.99
        (4, 0.0, {"CPU": 16, "GPU": 8}, 4),  # no GPU asked for: CPUs alone
        (4, 0.25, {"CPU": 2, "GPU": 1}, 1),  # never below one
    ],
)
def test_auto_concurrency_fits_the_cluster(cpus: float, gpus: float, cluster: dict, want: int) -> None:
    s = SearchSettings(concurrency="auto", cpus_per_trial=cpus, gpus_per_trial=gpus)
    assert s.trials_at_once(cluster) == want
    assert SearchSettings(concurrency=3, gpus_per_trial=gpus).trials_at_once(cluster) == 3


def test_gpus_above_one_are_whole() -> None:
    assert SearchSettings(gpus_per_trial=2).gpus_per_trial == 2
    with pytest.raises(ValidationError, match="whole number"):
        SearchSettings(gpus_per_trial=1.5)
    with pytest.raises(ValidationError):
        SearchSettings(concurrency="many")


def test_defaults_keep_serialisation_and_hash() -> None:
    base = SearchSpace()
    assert "gpus_per_trial" not in base.search.model_dump()
    same = base.with_search(gpus_per_trial=0.0)
    assert same.space_hash() == base.space_hash()
    used = base.with_search(gpus_per_trial=0.5, concurrency="auto")
    assert used.space_hash() != base.space_hash()
    assert SearchSpace.model_validate_json(used.model_dump_json()).search == used.search
