"""Shared test settings. The backend comes from KERAS_BACKEND, set before the run (see tests/run.sh)."""

import gc
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

keras.config.disable_interactive_logging()


@pytest.fixture(autouse=True)
def _seed():
    # Keras's `Layer.__delattr__` runs a full `gc.collect()` for every variable it deletes, and
    # `model.quantize`, LoRA merges and QAT conversion all delete some. With a backend
    # imported, one full collection scans ~450K objects (0.3 s on this machine), more as a worker ages:
    # TensorFlow keeps every traced train step alive (a custom gradient registered per trace). So the
    # garbage of the previous tests is collected here, and what survives is frozen: later collections
    # scan only the current test's objects. (kerasllm's own conversions avoid those collections with
    # `collect_once`, which leaves an existing freeze alone.) A TF subset (tests/layers, tests/models,
    # tests/quantization) in one process took 171 s with this, 238 s with one freeze after collection,
    # 270 s with none.
    gc.collect()
    gc.freeze()
    # `keras.backend.clear_session()` (KerasTuner calls it between trials) resets Keras's global state,
    # and with it this setting: without it, a later test's `fit` progress lands in its captured stdout.
    keras.config.disable_interactive_logging()
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield


@pytest.fixture
def backend_gradient():
    """`gradient(fn, x, upstream)`: d sum(fn(x) * upstream) / dx with the backend's own autodiff."""
    return _gradient


def _gradient(fn, x, upstream):
    """d sum(fn(x) * upstream) / dx with the backend's autodiff (test helper only)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: (fn(v) * upstream).sum())(x))
    if backend == "torch":
        import torch

        v = torch.tensor(x, requires_grad=True)
        (fn(v) * torch.tensor(upstream)).sum().backward()
        return v.grad.numpy()
    import tensorflow as tf

    v = tf.Variable(x)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(fn(v) * upstream)
    return tape.gradient(total, v).numpy()


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


@pytest.fixture
def reload_in_fresh_process(tmp_path, run_in_fresh_process):
    """Loads `.keras` files in a new interpreter; returns `{name: (outputs on x, quantization mode)}`.

    `paths` maps names to `.keras` files; the mode is that of `model.backbone.blocks[0].attention.query`.
    Files load through `kerasllm.utils.load_model` (safe mode), as users load them.
    """

    def run(paths, x):
        np.save(tmp_path / "fresh_x.npy", x)
        out = run_in_fresh_process(
            f"""
import json, numpy as np, keras, kerasllm
x = np.load({str(tmp_path / "fresh_x.npy")!r})
modes = {{}}
for name, path in {dict(paths)!r}.items():
    model = kerasllm.utils.load_model(path)
    modes[name] = model.backbone.blocks[0].attention.query.quantization_mode
    np.save({str(tmp_path)!r} + f"/fresh_{{name}}.npy", keras.ops.convert_to_numpy(model(x)))
print("MODES" + json.dumps(modes))
"""
        )
        modes = json.loads(out.split("MODES", 1)[1].strip().splitlines()[0])
        return {name: (np.load(tmp_path / f"fresh_{name}.npy"), modes[name]) for name in paths}

    return run


@pytest.fixture
def run_workers():
    """Starts `count` copies of a Python snippet as processes `0 ... count-1` of one job on 127.0.0.1.

    Each gets `argv = [rank, port, *args]` (a free port for the job's coordinator) and must print one
    line `RESULT<json>`; returns the decoded results in rank order. `env` is added to this process's
    environment.
    """

    def run(code, count, args=(), env=None, timeout=240):
        import json
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        environment = dict(os.environ, **(env or {}))
        workers = [
            subprocess.Popen([sys.executable, "-c", code, str(rank), port, *map(str, args)], env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for rank in range(count)
        ]
        results = []
        try:
            for worker in workers:
                stdout, stderr = worker.communicate(timeout=timeout)
                assert worker.returncode == 0, stderr[-4000:]
                results.append(json.loads([l for l in stdout.splitlines() if l.startswith("RESULT")][-1][6:]))
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
        return results

    return run
