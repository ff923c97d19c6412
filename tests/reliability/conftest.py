"""Fixtures of the reliability suite (its helpers: `helpers.sweeps`, `helpers.services`).

Every service binds to 127.0.0.1 and is stopped by the fixture that started it (by its
process group, never by name).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.services import MlflowServer


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()  # ~20 s to come up on a loaded machine: started early, awaited late
    yield server
    server.stop()
