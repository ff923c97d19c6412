"""The test tiers (tests/helpers/tiers.py, tests/conftest.py): what the guard counts as heavy,
and that `--fast` leaves out the modules known to run sweeps, compile or start processes."""

from __future__ import annotations

import pytest

from helpers import PY
from helpers.tiers import COLLECTED, classify, missing

#: a test of each kind; `--fast` must select none of them
KNOWN_HEAVY = [
    "tests/test_sweep_extend.py",  # a real sweep through the CLI
    "tests/sweep/test_gpus.py",  # sweeps on a local Ray with logical GPUs
    "tests/model/test_compile.py",  # torch.compile of every preset
    "tests/model/test_fsdp.py",  # gloo ranks
    "tests/reliability/test_rel_cluster.py",  # a Ray cluster
    "tests/reliability/test_rel_mlflow.py",  # an mlflow server
    "tests/test_distributed.py::test_two_processes_train_and_score_as_one",
    "tests/test_cli.py::test_real_sweep_pareto_piped_through_cat",
]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ([PY, "-m", "searchvlm", "sweep", "tiny.yaml"], "searchvlm sweep"),
        (["/x/.venv/bin/searchvlm", "sweep", "s.yaml", "--name", "cl"], "searchvlm sweep"),
        (["bash", "-c", f"{PY} -m searchvlm sweep s.yaml | cat"], "searchvlm sweep"),
        ([PY, "-c", "from searchvlm.sweep import run_sweep; run_sweep('s.yaml')"], "searchvlm sweep"),
        (["/v/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server", "--port=0"], "ray"),
        ([PY, "/v/lib/python3.11/site-packages/ray/_private/log_monitor.py"], "ray"),
        (["/v/bin/ray", "start", "--head"], "ray"),
        ([PY, "-c", "import ray; ray.init(address='auto')"], "ray"),
        ([PY, "-c", "from searchvlm.sweep import ensure_ray; ensure_ray(num_cpus=1)"], "ray"),
        (["/v/bin/mlflow", "server", "--port", "5000"], "mlflow server"),
        ([PY, "-m", "searchvlm", "--version"], None),
        (["bash", "-o", "pipefail", "-c", f"{PY} -m searchvlm pareto tiny --runs-dir /t/cli_sweep0 | cat"], None),
        ([PY, "-m", "mkdocs", "build", "--strict"], None),
        ("git status", None),
    ],
)
def test_heavy_starts_are_recognised(args: list[str] | str, reason: str | None) -> None:
    assert classify(args) == reason


def test_missing_names_the_markers_that_would_do() -> None:
    assert missing(["ray", "torch.compile"], {"sweep"}) == ["torch.compile (mark it compile)"]
    assert missing(["multiprocessing", "multiprocessing"], set()) == ["multiprocessing (mark it multiprocess)"]
    assert missing(["searchvlm sweep"], {"sweep", "slow"}) == []


def test_fast_tier_leaves_out_the_known_heavy_tests(request: pytest.FixtureRequest) -> None:
    """Read from this session's collection (both tiers collect every file, then `--fast` deselects)."""
    collected = request.config.stash.get(COLLECTED, {})
    known = {k: [n for n in collected if n == k or n.startswith((f"{k}::", f"{k}["))] for k in KNOWN_HEAVY}
    if not all(known.values()):
        pytest.skip(f"not collected in this session: {[k for k, v in known.items() if not v]} (run the tier)")
    assert [n for ids in known.values() for n in ids if not collected[n]] == []
