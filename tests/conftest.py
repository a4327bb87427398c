"""Shared test settings. The backend comes from KERAS_BACKEND, set before the run (see tests/run.sh)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

keras.config.disable_interactive_logging()


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield


@pytest.fixture
def run_in_fresh_process():
    """Runs a Python snippet in a new interpreter with the same backend; returns its stdout."""

    def run(code, timeout=300):
        env = dict(os.environ)
        env.setdefault("KERAS_BACKEND", keras.backend.backend())
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout
        )
        if result.returncode != 0:
            raise AssertionError(f"fresh process failed:\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}")
        return result.stdout

    return run
