"""Fixtures shared by the whole suite (plain helpers live in the `helpers` package)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

#: seconds a `slow` test may take, fixtures included (its session fixture may run a real
#: sweep of up to 600 s first), before pytest-timeout fails it; others get pyproject's 600
SLOW_TIMEOUT = 1200


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`slow` tests get SLOW_TIMEOUT unless they say their own `@pytest.mark.timeout`."""
    for item in items:
        if item.get_closest_marker("slow") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny matmuls on a shared, loaded CPU: several torch threads wait on each other (10x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
