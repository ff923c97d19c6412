"""Fixtures shared by the whole suite (plain helpers live in the `helpers` package), the
`--fast` tier and its guard (`helpers.tiers`)."""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from typing import Any

import pytest

import searchvlm  # noqa: F401  (pins torch's CPU kernels, as for a user, before any test loads torch)
from helpers import tiers

#: seconds a `slow`, `sweep` or `multiprocess` test may take, fixtures included (its session
#: fixture may run a real sweep of up to 600 s first), before pytest-timeout fails it; others
#: get pyproject's 600
SLOW_TIMEOUT = 1200


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fast", action="store_true", help="the fast tier: leave out the tests marked "
                     + ", ".join(tiers.HEAVY) + " (make test-fast)")  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--fast` deselects the HEAVY tests; `slow`, `sweep` and `multiprocess` tests get
    SLOW_TIMEOUT unless they say their own `@pytest.mark.timeout`."""
    heavy = [it for it in items if any(it.get_closest_marker(m) for m in tiers.HEAVY)]
    config.stash[tiers.COLLECTED] = {it.nodeid: it in heavy for it in items}
    if config.getoption("fast"):
        if heavy:
            config.hook.pytest_deselected(items=heavy)
            items[:] = [it for it in items if it not in set(heavy)]
    for item in items:
        long = any(item.get_closest_marker(m) for m in ("slow", "sweep", "multiprocess"))
        if long and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))


# --------------------------------------------------------------------------- the tier guard (helpers.tiers)

_seen: list[str] | None = None  # what the running test started; None between tests
_setting_up: list[Any] = []  # the fixture definitions being set up, innermost last
_by_fixture: dict[Any, set[str]] = {}  # what a fixture started when it was set up


def _record(reason: str) -> None:
    if _seen is None:
        return
    _seen.append(reason)
    if _setting_up:
        _by_fixture.setdefault(_setting_up[-1], set()).add(reason)


def _audit(event: str, args: tuple) -> None:
    if event == "subprocess.Popen" and _seen is not None:
        try:
            reason = tiers.classify(args[1])
        except Exception:  # noqa: BLE001 - never break the program watched
            return
        if reason:
            _record(reason)


def _watch_torch_compile() -> None:
    torch = sys.modules.get("torch")
    if torch is None or getattr(torch.compile, "_tier_guard", False):
        return
    compile_ = torch.compile

    def watched(*args: Any, **kwargs: Any) -> Any:
        _record("torch.compile")
        return compile_(*args, **kwargs)

    watched._tier_guard = True  # type: ignore[attr-defined]
    torch.compile = watched


def pytest_configure(config: pytest.Config) -> None:
    import multiprocessing.process

    sys.addaudithook(_audit)
    start = multiprocessing.process.BaseProcess.start

    def watched_start(self: Any) -> None:
        _record("multiprocessing")
        start(self)

    multiprocessing.process.BaseProcess.start = watched_start  # type: ignore[method-assign]


def pytest_collection_finish(session: pytest.Session) -> None:
    _watch_torch_compile()  # torch is loaded by now wherever a collected test module imports it


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, Any, Any]:
    global _seen
    _watch_torch_compile()
    _seen = []
    try:
        return (yield)
    finally:
        _seen = None


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: Any) -> Generator[None, Any, Any]:
    _setting_up.append(fixturedef)
    try:
        return (yield)
    finally:
        _setting_up.pop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, Any, Any]:
    """A test that started something heavy (itself or through a fixture, even one set up for
    an earlier test) without the marker that says so fails: it would run in the fast tier."""
    report = yield
    if call.when == "setup" or _seen is None:
        return report
    reasons = set(_seen)  # at teardown: what the teardown started
    _seen.clear()
    if call.when == "call":  # and what the fixtures it uses started, whenever they were set up
        for defs in item._fixtureinfo.name2fixturedefs.values():  # type: ignore[attr-defined]
            for d in defs:
                reasons |= _by_fixture.get(d, set())
    unmarked = tiers.missing(reasons, {m.name for m in item.iter_markers()})
    if unmarked and report.outcome != "failed":
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} starts {', '.join(unmarked)}: marked so, it leaves the fast tier "
                           "(`pytest --fast`, tests/helpers/tiers.py)")  # fmt: skip
    return report


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny matmuls on a shared, loaded CPU: several torch threads wait on each other (10x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
