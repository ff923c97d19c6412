"""`decide`: the cheapest policy of a sweep that keeps dense's synergy, with an error rate.

L4 module (trains through `searchvlm.records.confirm`'s paired runs, logs through
`searchvlm.tracking`). The answer to the user's question, in three steps:

1. Shortlist: the sweep's front and near-front (as `confirm` takes them; a one-seed sweep's
   noise from the space's `calibration.synergy_sd`), cheaper than dense, the `shortlist`
   cheapest. Their order is fixed here, before any race seed is trained: most expensive first.
2. Race (`searchvlm.objectives.noninferiority.race`): each candidate trained on fresh seeds, every
   seed paired with the dense joint model of the same seed (`synergy.vs_dense`), tested
   one-sided for non-inferiority at margin `delta`; seeds are added (looks: `first_seeds`,
   doubling up to `max_seeds`) only while its bound is undecided.
3. Verdict: `accepted` (the cheapest candidate shown non-inferior before the race stopped),
   `none_qualifies`, or `undetermined` (with the seeds a decision would need). The chance of
   accepting a policy that is in truth worse than dense by `delta` or more is at most `alpha`.

Files: `runs/<sweep>/race.json` holds every (candidate, seed) result as it finishes (and
`confirmed.csv`'s per-seed records on the same seeds count too), so an interrupted `decide`
retrains nothing it finished; `decision.json` holds the verdict (`export --rule decision`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from searchvlm.objectives.noninferiority import RaceResult, look_schedule, race
from searchvlm.objectives.pareto import confirm_candidates, is_valid, pooled_seed_sd
from searchvlm.records.confirm import paired_config, run_space, train_paired
from searchvlm.schema._tables import atomic_write
from searchvlm.schema.errors import COMMAND_LINE, ConfigError
from searchvlm.schema.policy import ReductionPolicy
from searchvlm.schema.results import (
    CONFIRMED_FILE,
    DECISION_FILE,
    DECISION_SCHEMA,
    SWEEP_FILE,
    TRIALS_FILE,
    SweepMeta,
    TrialRow,
    read_confirmed,
    read_meta,
    read_trials,
    resolve_run_dir,
)
from searchvlm.schema.search import DecisionSettings
from searchvlm.schema.space import SearchSpace

__all__ = ["RACE_FILE", "DecideOptions", "Decision", "decide", "shortlist"]

RACE_FILE = "race.json"
#: what a race record keeps of a one-seed paired trial
RECORD_KEYS = ("synergy_gain", "synergy_vs_dense", "und_gain", "gen_gain", "flops_ratio")
OnEvent = Callable[[str], None]


@dataclass(frozen=True)
class DecideOptions:
    """Command-line settings; None takes the space's `decision:` section (then its defaults)."""

    delta: float | None = None
    alpha: float | None = None
    max_seeds: int | None = None
    first_seeds: int | None = None
    shortlist: int | None = None
    seeds: list[int] | None = None  # the race seeds (default: after the sweep's)
    jobs: int = 1  # runs trained at once (processes): the seeds' reference runs, then the candidate's seeds


@dataclass
class Decision:
    """What `decide` found, and what it cost."""

    run_dir: Path
    settings: DecisionSettings
    seeds: list[int]
    order: list[dict[str, Any]]  # the shortlist in test order: trial_id, number, preset, flops_ratio
    result: RaceResult
    trained: int = 0  # (candidate, seed) runs trained by this call
    reused: int = 0  # records already there (race.json, confirmed.csv)
    path: Path = field(default_factory=Path)

    @property
    def accepted(self) -> dict[str, Any] | None:
        a = self.result.accepted
        return None if a is None else next(o for o in self.order if o["trial_id"] == a.name)

    def line(self) -> str:
        """The one verdict line."""
        r, a = self.result, self.result.accepted
        margin = f"margin delta {r.delta:g}, alpha {r.alpha:g}"
        if a is not None:
            return (f"accepted: trial {self._named(a.name)}, FLOPs ratio "
                    f"{a.flops_ratio:.3f}, synergy - dense {a.mean:+.4f}, lower bound {a.lower:+.4f} > -{r.delta:g} "
                    f"on {a.seeds} fresh seeds (p {a.p:.3g}; {margin})")  # fmt: skip
        last = r.tested[-1] if r.tested else None
        if r.verdict == "none_qualifies" and last is not None:
            return (f"none qualifies among the {len(self.order)} shortlisted: the most expensive, trial "
                    f"{self._named(last.name)} "
                    f"(FLOPs ratio {last.flops_ratio:.3f}), is worse than dense by more than the margin (upper "
                    f"bound {last.upper:+.4f} < -{r.delta:g}, {last.seeds} seeds; {margin})")  # fmt: skip
        need = "more seeds than searchvlm plans for (over 100,000)" if r.seeds_needed is None else (
            f"about {r.seeds_needed} paired seeds for 80% power at its paired SD {last.sd:.4f} if it is as good "
            f"as dense: a new race on that many fresh seeds (--seeds, --first-seeds, --max-seeds)")  # fmt: skip
        return (f"undetermined: trial {self._named(r.stopped_at)} (FLOPs ratio {last.flops_ratio:.3f}) has lower bound "
                f"{last.lower:+.4f} and upper bound {last.upper:+.4f} around -{r.delta:g} after {last.seeds} "
                f"seeds; a decision needs {need} ({margin})")  # fmt: skip

    def _named(self, trial_id: str | None) -> str:
        """`ad440f01 (himix_hmgen_partial, #1)`: a shortlisted trial with its preset (or 'sampled') and number."""
        o = next((o for o in self.order if o["trial_id"] == trial_id), {})
        return f"{trial_id} ({o.get('preset') or 'sampled'}, #{o.get('number')})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": DECISION_SCHEMA, "sweep": self.run_dir.name, "verdict": self.result.verdict,
            "line": self.line(), "accepted": self.accepted, "settings": self.settings.model_dump(),
            "seeds": self.seeds, "order": self.order, "race": self.result.as_dict(),
            "trained": self.trained, "reused": self.reused,
            "error_rate": (f"family-wise P(accept a policy worse than dense by >= {self.result.delta:g}) <= "
                           f"{self.result.alpha:g}: fixed FLOPs sequence (most expensive first), each look at "
                           f"alpha / {len(self.result.looks)} looks"),
            "decided_at": dt.datetime.now().isoformat(timespec="seconds"),
        }  # fmt: skip


# --------------------------------------------------------------------------- settings


def _given(o: DecideOptions) -> dict[str, Any]:
    return {"delta": o.delta, "alpha": o.alpha, "max_seeds": o.max_seeds, "first_seeds": o.first_seeds,
            "shortlist": o.shortlist}  # fmt: skip


def _settings(space: SearchSpace, o: DecideOptions, source: Path) -> DecisionSettings:
    """The space's `decision:` section with the command line's values over it (checked first)."""
    base = space.decision.model_dump() if space.decision else {}
    given = _given(o)
    merged = {**base, **{k: v for k, v in given.items() if v is not None}}
    if "delta" not in merged:
        raise ConfigError(COMMAND_LINE, "--delta", None, f"no margin: give --delta (e.g. 0.04) or a `decision:` "
                          f"section with delta in {source}")  # fmt: skip
    if given["max_seeds"] is not None and given["first_seeds"] is None:  # --max-seeds alone: the first look fits
        first = merged.get("first_seeds", DecisionSettings.model_fields["first_seeds"].default)
        merged["first_seeds"] = min(first, merged["max_seeds"])
    try:
        return DecisionSettings(**merged)
    except ValidationError as err:  # first_seeds above max_seeds
        reason = err.errors()[0]["msg"].removeprefix("Value error, ")
        flag, value = ("--first-seeds", merged.get("first_seeds")) if given["first_seeds"] is not None else (
            "--max-seeds", merged.get("max_seeds"))  # fmt: skip
        raise ConfigError(COMMAND_LINE, flag, value, reason) from None


def _check_given(given: dict[str, Any]) -> None:
    """The command line's values alone, before any file is read."""
    flags = {"max_seeds": "--max-seeds", "first_seeds": "--first-seeds"}
    d, a = given["delta"], given["alpha"]
    if d is not None and not (math.isfinite(d) and d > 0):
        raise ConfigError(COMMAND_LINE, "--delta", d, "the margin must be a number > 0 (a synergy difference)")
    if a is not None and not 0 < a < 0.5:
        raise ConfigError(COMMAND_LINE, "--alpha", a, "the error rate must be in (0, 0.5)")
    for key in ("max_seeds", "first_seeds"):
        if given[key] is not None and given[key] < 2:
            raise ConfigError(COMMAND_LINE, flags[key], given[key], "a paired bound needs at least 2 seeds")
    if given["shortlist"] is not None and given["shortlist"] < 1:
        raise ConfigError(COMMAND_LINE, "--shortlist", given["shortlist"], "must be at least 1")


def _race_seeds(space: SearchSpace, settings: DecisionSettings, seeds: list[int] | None) -> list[int]:
    if seeds is None:
        top = max(space.seeds)
        return list(range(top + 1, top + 1 + settings.max_seeds))
    reused = sorted(set(seeds) & set(space.seeds))
    if reused or len(set(seeds)) != len(seeds) or len(seeds) < settings.max_seeds:
        why = (f"seeds {reused} trained the sweep itself; the race needs fresh seeds" if reused else
               f"give {settings.max_seeds} distinct seeds (--max-seeds)")  # fmt: skip
        raise ConfigError(COMMAND_LINE, "--seeds", ",".join(map(str, seeds)), why)
    return list(seeds[: settings.max_seeds])


# --------------------------------------------------------------------------- the shortlist


def shortlist(rows: list[TrialRow], k: int, seed_sd: float | None) -> list[TrialRow]:
    """The `k` cheapest of the front and near-front that are cheaper than dense, in test
    order (most expensive first). `seed_sd` stands in for a one-seed point's noise."""
    trained = [r for r in rows if not r.get("duplicate_of") and is_valid(r)]
    sd = pooled_seed_sd(trained) or seed_sd
    near = [r for r in confirm_candidates(trained, default_se=sd) if float(r["flops_ratio"]) < 1.0]
    cheapest = sorted(near, key=lambda r: (float(r["flops_ratio"]), -float(r["synergy_gain"]), int(r["number"])))[:k]
    return cheapest[::-1]


def _order_entry(row: TrialRow) -> dict[str, Any]:
    return {"trial_id": row.trial_id, "number": row.number, "preset": row.preset or None,
            "flops_ratio": float(row["flops_ratio"]), "search_synergy_gain": float(row["synergy_gain"]),
            "policy_json": row.policy_text}  # fmt: skip


# --------------------------------------------------------------------------- records


class Records:
    """Every (candidate, seed) paired result: race.json's, then confirmed.csv's on the same seeds
    (`name`: another file of the same form, `reproduce --max-seeds`'s table3_race.json)."""

    def __init__(self, run_dir: Path, name: str = RACE_FILE) -> None:
        self.path = run_dir / name
        self.data: dict[tuple[str, int], dict[str, Any]] = {}
        self.plan: dict[str, Any] | None = None  # the race these records belong to (see `settle`)
        self._load_race()
        self._load_confirmed(run_dir / CONFIRMED_FILE)

    def _load_race(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            self.plan = data.get("plan")
            for r in data["records"]:
                self.data[(str(r["trial_id"]), int(r["seed"]))] = r
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(self.path, "records", type(err).__name__, f"not a race file searchvlm wrote ({err}); "
                              "move it away to start the race again") from None  # fmt: skip

    def _load_confirmed(self, path: Path) -> None:
        for row in read_confirmed(path):
            if row.get("status") != "ok":
                continue
            vs, syn = row.per_seed_values("vs_dense_per_seed"), row.synergy_per_seed
            for i, seed in enumerate(row.seeds):
                if i < len(vs) and vs[i] is not None and (row.trial_id, seed) not in self.data:
                    self.data[(row.trial_id, seed)] = {
                        "trial_id": row.trial_id, "seed": seed, "status": "ok", "source": "confirmed.csv",
                        "synergy_vs_dense": vs[i], "synergy_gain": syn[i] if i < len(syn) else None}  # fmt: skip

    def ok(self, tid: str, seed: int) -> dict[str, Any] | None:
        r = self.data.get((tid, seed))
        return r if r is not None and r.get("status") == "ok" and r.get("synergy_vs_dense") is not None else None

    def settle(self, plan: dict[str, Any]) -> None:
        """Bind the records to `plan` (margin, error rate, looks, seeds, test order), fixed
        before its first seed was trained. A rerun must race the same plan: changing it after
        its seeds were seen (more looks, another margin or order) would break the error rate.
        A plan on seeds none of the earlier plan's uses is a new race and replaces it."""
        old = self.plan
        if old is not None and old != plan and set(old.get("seeds", [])) & set(plan["seeds"]):
            changed = sorted(k for k in plan if old.get(k) != plan[k])
            raise ConfigError(self.path, "plan", ", ".join(changed),
                              f"this race was planned with {', '.join(f'{k} {old.get(k)}' for k in changed)}; "
                              "changing that after its seeds were seen would break its error rate: rerun with the "
                              "same settings, or race anew on fresh seeds (--seeds none of "
                              f"{old.get('seeds')})")  # fmt: skip
        self.plan = plan
        self._write()

    def put(self, record: dict[str, Any]) -> None:
        self.data[(str(record["trial_id"]), int(record["seed"]))] = record
        self._write()

    def _write(self) -> None:
        own = [r for r in self.data.values() if r.get("source") != "confirmed.csv"]
        atomic_write(self.path, json.dumps({"plan": self.plan, "records": own}, indent=1) + "\n")


def _train_one(space_json: str, policy_json: str, name: str, seed: int, cache: str) -> dict[str, Any]:
    """One candidate on one seed, paired with dense (module level: runs in a worker process)."""
    space = SearchSpace.model_validate_json(space_json)
    result = train_paired(space, ReductionPolicy.model_validate_json(policy_json), name, [seed], Path(cache))
    seed_rec = result.per_seed[0].model_dump() if result.per_seed else {}  # the keys the seed's record has
    out = {k: seed_rec.get(k, getattr(result, k, None)) for k in RECORD_KEYS}
    return {**out, "seed": seed, "status": result.status, "error": result.error or "",
            "train_seconds": result.train_seconds}  # fmt: skip


#: the references' usual lengths on the default proxy, longest first (the generator alone
#: 108 s, the dense joint model 95 s, the understanding model alone 38 s: docs/performance.md)
_REFERENCE_COST = {"generation": 0, "dense": 1, "understanding": 2}


def _reference_order(space: SearchSpace) -> list[str]:
    """The reference runs a paired race seed compares with, longest first."""
    from searchvlm.train.trial import reference_labels

    config = paired_config(space, ReductionPolicy.dense(space.model.num_layers), "baselines", [0], Path("."))
    return sorted(reference_labels(config), key=lambda label: _REFERENCE_COST.get(label, len(_REFERENCE_COST)))


def _warm_one(space_json: str, cache: str, seed: int, label: str) -> tuple[bool, float]:
    """One reference run of one race seed into the cache (module level: runs in a worker
    process); (was it cached already, seconds)."""
    from searchvlm.train.trial import warm_reference

    space = SearchSpace.model_validate_json(space_json)
    config = paired_config(space, ReductionPolicy.dense(space.model.num_layers), "baselines", [seed], Path(cache))
    start = time.perf_counter()
    return warm_reference(config, seed, label), time.perf_counter() - start


def _outcome(future: Future, seed: int) -> dict[str, Any]:
    """A worker's record, or a failed one when the worker itself died (killed, out of memory)."""
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - recorded as a failed seed; the others are kept
        return {"seed": seed, "status": "failed", "error": f"{type(err).__name__}: {err}"}


# --------------------------------------------------------------------------- the command


class _Sampler:
    """The race's `sample(candidate, n)`: the first n race seeds' differences, training what is missing."""

    def __init__(self, space: SearchSpace, order: list[dict[str, Any]], seeds: list[int], records: Records,
                 cache: Path, jobs: int, on_event: OnEvent | None) -> None:  # fmt: skip
        self.space, self.seeds, self.records, self.cache, self.jobs = space, seeds, records, cache, jobs
        self.policies = {o["trial_id"]: o["policy_json"] for o in order}
        self.on_event, self.trained, self.reused = on_event or (lambda _: None), 0, 0
        self._seen: set[tuple[str, int]] = set()

    def __call__(self, tid: str, n: int) -> list[float]:
        want = self.seeds[:n]
        todo = [s for s in want if self.records.ok(tid, s) is None]
        self.reused += sum(1 for s in want if s not in todo and (tid, s) not in self._seen)
        self._seen.update((tid, s) for s in want)
        self._train(tid, todo)
        return [float(self.records.ok(tid, s)["synergy_vs_dense"]) for s in want]  # type: ignore[index]

    def _train(self, tid: str, seeds: list[int]) -> None:
        space_json = self.space.model_dump_json()
        args = [(space_json, self.policies[tid], f"decide-{tid}", s, str(self.cache)) for s in seeds]
        if self.jobs > 1 and len(seeds) > 1:
            self._train_parallel(tid, args)
        else:
            for a in args:
                self._record(tid, _train_one(*a))
        failed = [(s, self.records.data[(tid, s)].get("error") or "no synergy_vs_dense recorded")
                  for s in seeds if self.records.ok(tid, s) is None]  # fmt: skip
        if failed:
            seed, err = failed[0]
            raise ConfigError(self.records.path, f"trial {tid}.seed {seed}", "failed",
                              f"the race's training failed ({err[:300]}); rerun decide to retry it "
                              "(finished seeds are kept)")  # fmt: skip

    def _train_parallel(self, tid: str, args: list[tuple]) -> None:
        """`jobs` processes over the seeds' reference runs (longest first) and then the
        candidate's seeds: a pool that took whole seeds left a core idle for a seed's whole
        length when the seeds did not divide evenly among the jobs. A candidate job that
        starts before its references are cached waits for them under the cache's lock."""
        seeds = [a[3] for a in args]
        refs = [(s, label) for label in _reference_order(self.space) for s in seeds]
        with ProcessPoolExecutor(min(self.jobs, len(refs) + len(args)), mp_context=get_context("spawn")) as pool:
            warm = {pool.submit(_warm_one, args[0][0], str(self.cache), s, label): (s, label) for s, label in refs}
            train = {pool.submit(_train_one, *a): a[3] for a in args}  # queued behind every reference
            for done in as_completed({**warm, **train}):  # each seed recorded as it finishes
                if done in train:
                    self._record(tid, _outcome(done, train[done]))
                else:
                    self._warmed(done, *warm[done])

    def _warmed(self, done: Future, seed: int, label: str) -> None:
        what = "dense joint" if label == "dense" else f"{label} alone"
        try:
            cached, seconds = done.result()
        except Exception as err:  # noqa: BLE001 - the candidate's own run trains it
            self.on_event(f"reference {what}, seed {seed}: failed ({type(err).__name__}); the candidate trains it")
            return
        self.on_event(f"reference {what}, seed {seed}: " + ("cached" if cached else f"trained in {seconds:.0f} s"))

    def _record(self, tid: str, rec: dict[str, Any]) -> None:
        rec = {"trial_id": tid, **rec, "trained_at": dt.datetime.now().isoformat(timespec="seconds")}
        self.records.put(rec)
        self.trained += 1
        vs = rec.get("synergy_vs_dense")
        self.on_event(f"trial {tid} seed {rec['seed']}: {rec['status']}"
                      + ("" if vs is None else f", synergy - dense {vs:+.4f}"))  # fmt: skip


def _rows(run_dir: Path) -> list[TrialRow]:
    rows = read_trials(run_dir / TRIALS_FILE, strict=True)
    if not any(is_valid(r) for r in rows):
        raise ConfigError(run_dir / TRIALS_FILE, "trials", len(rows),
                          "no trial finished ok with both objectives: nothing to decide between")  # fmt: skip
    return rows


def decide(run: str | Path, options: DecideOptions = DecideOptions(), runs_dir: str | Path = "runs",
           tracking_uri: str | None = None, on_event: OnEvent | None = None) -> Decision:  # fmt: skip
    """Decide sweep `run` (see the module docstring); writes `decision.json` and logs it."""
    if options.jobs < 1:
        raise ConfigError(COMMAND_LINE, "--jobs", options.jobs, "must be at least 1")
    _check_given(_given(options))
    run_dir = resolve_run_dir(run, runs_dir)
    meta = read_meta(run_dir / SWEEP_FILE)
    space = run_space(run_dir, meta)
    settings = _settings(space, options, run_dir / Path(meta.space_path).name)
    seeds = _race_seeds(space, settings, options.seeds)
    sd = space.calibration.synergy_sd if space.calibration else None
    order = [_order_entry(r) for r in shortlist(_rows(run_dir), settings.shortlist, sd)]
    if not order:
        raise ConfigError(run_dir / TRIALS_FILE, "trials", "front", "no policy on the front or near-front is "
                          "cheaper than dense: nothing to decide (dense is the answer)")  # fmt: skip
    records = Records(run_dir)
    looks = look_schedule(settings.first_seeds, settings.max_seeds)
    records.settle({"delta": settings.delta, "alpha": settings.alpha, "looks": looks, "seeds": seeds,
                    "order": [o["trial_id"] for o in order]})  # fmt: skip
    sampler = _Sampler(space, order, seeds, records, meta.cache_path(run_dir), options.jobs, on_event)
    result = race([(o["trial_id"], o["flops_ratio"]) for o in order], sampler, settings.delta, settings.alpha, looks)
    done = Decision(run_dir, settings, seeds, order, result, sampler.trained, sampler.reused, run_dir / DECISION_FILE)
    atomic_write(done.path, json.dumps(done.as_dict(), indent=1) + "\n")
    _log(meta, tracking_uri, done)
    return done


def _log(meta: SweepMeta, tracking_uri: str | None, done: Decision) -> None:
    uri = tracking_uri or meta.tracking_uri
    if not (uri and meta.parent_run_id):
        return
    from searchvlm.tracking import log_decision

    log_decision(uri, meta.parent_run_id, done.as_dict(), done.path)
