"""Picks a Keras backend before Keras is imported. Imports nothing from Keras.

Keras defaults to TensorFlow (and writes that into `~/.keras/keras.json` the first time it is
imported), so on a machine with only JAX or PyTorch installed a plain `import keras` fails. kerasllm
respects `KERAS_BACKEND` and the backend in `keras.json` whenever that backend is installed, and
otherwise selects the first installed of jax, torch, tensorflow.
"""

import importlib.util
import json
import os

BACKENDS = ("jax", "torch", "tensorflow")


def installed(backend):
    return importlib.util.find_spec(backend) is not None


def configured_backend():
    """The backend Keras would use: `KERAS_BACKEND`, else `keras.json`, else TensorFlow."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    path = os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "keras.json")
    try:
        with open(path) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def ensure_installed_backend():
    """Sets `KERAS_BACKEND` to an installed backend if the configured one is missing; returns the choice."""
    backend = configured_backend()
    if backend in BACKENDS and not installed(backend) and not os.environ.get("KERAS_BACKEND"):
        for candidate in BACKENDS:
            if installed(candidate):
                os.environ["KERAS_BACKEND"] = candidate
                return candidate
    return backend
