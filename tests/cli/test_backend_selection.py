"""Backend choice before Keras is imported: the CLI's --backend and the fallback when Keras's default
backend is not installed."""

import json
import os
import subprocess
import sys

import keras
import pytest

from kerasllm import backend_selection


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    return tmp_path


def test_missing_default_backend_falls_back_to_an_installed_one(clean_env, monkeypatch):
    monkeypatch.setattr(backend_selection, "installed", lambda name: name == "torch")
    assert backend_selection.ensure_installed_backend() == "torch"
    assert os.environ["KERAS_BACKEND"] == "torch"


def test_installed_configured_backend_is_respected(clean_env, monkeypatch):
    (clean_env / "keras.json").write_text(json.dumps({"backend": "jax"}))
    monkeypatch.setattr(backend_selection, "installed", lambda name: True)
    assert backend_selection.ensure_installed_backend() == "jax"
    assert "KERAS_BACKEND" not in os.environ


def test_explicit_keras_backend_is_never_overridden(clean_env, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setattr(backend_selection, "installed", lambda name: name == "jax")
    assert backend_selection.ensure_installed_backend() == "tensorflow"
    assert os.environ["KERAS_BACKEND"] == "tensorflow"


def test_cli_backend_flag_switches_backend():
    other = next(b for b in ("jax", "torch", "tensorflow") if b != keras.backend.backend())
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run([sys.executable, "-m", "kerasllm", "info", "--backend", other],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"backend {other}" in result.stdout
