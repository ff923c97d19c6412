"""A real `mlflow server` on 127.0.0.1 goes down mid-sweep for longer than the tracker's
back-off, then comes back on the same port: buffered writes are delivered in order, no
run is lost or duplicated."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from helpers import BIN
from helpers.services import MlflowServer, stop_group, wait_for
from helpers.sweeps import check_consistent, rows_of, tiny_space


@pytest.mark.slow
@pytest.mark.sweep
@pytest.mark.multiprocess  # an mlflow server
def test_mlflow_server_restart_mid_sweep(mlflow_server: MlflowServer, tmp_path: Path):
    mlflow_server.wait()
    runs = tmp_path / "runs"
    space = tiny_space(tmp_path / "ml.yaml", samples=4, steps=40)
    log = tmp_path / "driver.log"
    cmd = [str(BIN / "searchvlm"), "sweep", str(space), "--name", "ml", "--runs-dir", str(runs),
           "--tracking-uri", mlflow_server.url, "--no-progress"]  # fmt: skip
    with log.open("w") as fh:
        driver = subprocess.Popen(cmd, cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})  # fmt: skip
    try:
        wait_for(lambda: len(rows_of(runs / "ml" / "trials.csv")) >= 1 or driver.poll() is not None,
                 300, "a first finished trial")  # fmt: skip
        mlflow_server.stop()
        time.sleep(20)  # longer than the tracker's back-off (0.5 + 1 + 2 + 4 + 8 s)
        mlflow_server.start()
        mlflow_server.wait()
        assert driver.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        stop_group(driver)
    text = log.read_text()
    assert "writes buffered" in text, "the outage never outlasted the back-off: nothing tested"
    assert "not delivered" not in text
    rows = check_consistent(runs / "ml", "ml", mlflow_server.url, runs, samples=4)
    assert {r["status"] for r in rows} == {"ok"}
