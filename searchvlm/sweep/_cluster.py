"""The Ray side of a sweep's start (L4, inside `searchvlm.sweep`): starting or joining Ray,
the CPUs a local Ray gets, what the driver's environment hands every worker (`trial_env`),
fitting the trials at once to the cluster (`concurrency: auto`, GPU and CPU requests
checked), and quieting Tune's own reporting.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

import ray

from searchvlm.schema._host import KERNELS_ENV, PINS
from searchvlm.schema.errors import COMMAND_LINE, ConfigError
from searchvlm.schema.search import SearchSettings
from searchvlm.schema.space import SearchSpace

from ._keys import PROFILE_ENV

log = logging.getLogger("searchvlm.sweep._driver")  # the logger these warnings always had


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to `address` / `RAY_ADDRESS` (token from `RAY_AUTH_TOKEN`), or start a local
    Ray on 127.0.0.1 without dashboard. Returns True if this call started/connected Ray.
    Either way every worker of this job, on every node, gets `trial_env()`."""
    if ray.is_initialized():
        return False
    address = cluster_address(address)
    runtime_env = trial_env()
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
        return True
    loopback_only()
    # Ray's notice that token authentication is on (its default) says nothing to act on for
    # the loopback-only Ray a sweep starts for itself: kept out of the sweep's output
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # address="local": a new Ray of its own. With None, Ray joins the last cluster `ray start`
    # left on this machine (/tmp/ray/ray_current_cluster), and refuses num_cpus there
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, runtime_env=runtime_env)  # fmt: skip
    return True


def trial_env() -> dict | None:
    """The job's runtime_env for the driver's variables a trial reads, only those set here:
    `$SEARCHVLM_PROFILE` (a folder, made absolute: a trial runs in its own working directory)
    and the CPU-kernel pin (`_host.pin_kernels`: `$SEARCHVLM_CPU_KERNELS` and the variables it
    set, so that every node runs the driver's kernels and its numbers compare with the
    driver's) reach the trials on every node of a cluster (`ray start` gave their workers the
    node's environment, not the driver's). None when there is nothing to pass; a variable the
    job that runs this driver (`ray job submit --runtime-env-json`) already sets is left to it:
    Ray refuses the same variable from both."""
    wanted = {key: os.environ[key] for key in (KERNELS_ENV, *PINS["avx2"]) if os.environ.get(key)}
    if os.environ.get(PROFILE_ENV):
        wanted[PROFILE_ENV] = os.path.abspath(os.path.expanduser(os.environ[PROFILE_ENV]))
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    theirs = (job.get("runtime_env") or {}).get("env_vars") or {}
    env = {key: value for key, value in wanted.items() if key not in theirs}
    return {"env_vars": env} if env else None


CLIENT_PREFIX = "ray://"


def cluster_address(address: str | None) -> str | None:
    """The cluster a sweep joins (`--address`, else `RAY_ADDRESS`; None: a local Ray of its own).
    Ray Client (`ray://...`) is refused: Tune's driver would then run on the head and open the
    client's paths there (runs folder, Optuna study, baseline cache), which the head lacks."""
    given = address or os.environ.get("RAY_ADDRESS") or None
    if given and given.startswith(CLIENT_PREFIX):
        key = "--address" if address else "RAY_ADDRESS"
        raise ConfigError(COMMAND_LINE, key, given,
                          "Ray Client is not supported (Tune's driver would run on the head and write this "
                          "machine's paths there): run the sweep on the head node (--address auto), or submit "
                          "it there with `ray job submit --address http://HEAD:8265 --working-dir . -- "
                          "searchvlm sweep SPACE`")  # fmt: skip
    return given


def loopback_only() -> None:
    """Keep a local single-node Ray on 127.0.0.1. Ray (2.60) rewrites `127.0.0.1` to the
    machine's routable IP and then binds GCS, raylet and workers on every interface,
    unless it treats the machine as single-node (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`,
    read once at import, hence the constant too); its children inherit the variable."""
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def needs_cluster(search: SearchSettings) -> bool:
    return search.gpus_per_trial > 0 or search.concurrency == "auto"


def local_cpus(search: SearchSettings) -> int:
    """CPUs of a local Ray this sweep starts: what its trials use at once (auto: every core)."""
    cores = os.cpu_count() or 1
    return cores if search.concurrency == "auto" else min(cores, math.ceil(search.cpus_per_trial * search.concurrency))


def fit_cluster(space: SearchSpace, space_path: str | Path) -> int:
    """The trials run at once on this Ray cluster (`search.concurrency`, `auto` resolved and
    printed); ConfigError when one trial asks for more CPUs or GPUs than the cluster has."""
    s, have = space.search, ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0.0), have.get("GPU", 0.0)
    reports = f"ray.cluster_resources() reports CPU {cpus:g}, GPU {gpus:g}"
    for key, asked, there in (("gpus_per_trial", s.gpus_per_trial, gpus), ("cpus_per_trial", s.cpus_per_trial, cpus)):
        if asked > there:
            raise ConfigError(space_path, f"search.{key}", asked,
                              f"each trial asks Ray for {asked:g} {key[:3].upper()}s, but {reports}; "
                              "lower it or use a larger cluster (--address)")  # fmt: skip
    at_once = s.trials_at_once(have)
    if s.concurrency == "auto":
        per = f"{s.cpus_per_trial:g} CPU" + (f", {s.gpus_per_trial:g} GPU" if s.gpus_per_trial else "")
        print(f"concurrency auto: {at_once} trials at once ({reports}; each trial {per})", file=sys.stderr, flush=True)
    return at_once


def warn_unused_gpus(space: SearchSpace, space_path: str | Path) -> None:
    """Say so when the cluster has GPUs that this sweep's trials do not ask for (every trial
    would then see all of its node's GPUs and train on cuda:0)."""
    gpus = ray.cluster_resources().get("GPU", 0.0)
    if gpus and not space.search.gpus_per_trial and space.training.device != "cpu":
        msg = (f"{space_path}: the cluster has {gpus:g} GPUs but search.gpus_per_trial = 0: Ray places trials "
               "by CPUs alone and every trial trains on its node's cuda:0; set search.gpus_per_trial")  # fmt: skip
        log.warning(msg)
        print(f"warning: {msg}", file=sys.stderr, flush=True)


def quiet_ray() -> None:
    """Our live view replaces Tune's reporter. Of its per-trial loggers only JSON and CSV
    are kept (`_tuner` passes them): Ray's `ExperimentAnalysis` reads a trial's metrics from
    its result.json / progress.csv; TensorBoard's needs tensorboardX and adds nothing."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # a failed trial's final report has no objectives; MOOptunaSearch tells it FAIL
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def shutdown_ray() -> None:
    """Stop the Ray session of this process (tests sharing one session call it once)."""
    ray.shutdown()
