"""`benchmarks/gpu_suite.sh --smoke`: the GPU suite's whole code path on the CPU, so it keeps working
between the rare runs on a lent GPU."""

import importlib.util
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_suite.sh")
EXPECTED = {  # at least these; the JSON lists every variant the smoke run selected
    "train-kerasllm-jax", "train-kerasllm-torch", "train-keras_hub-jax", "train-keras_hub-torch",
    "generate-kerasllm-jax", "generate-kerasllm-torch",
}

# The script picks the backend of each of its worker processes itself, so this process's KERAS_BACKEND
# changes nothing: it runs (about a minute on 2 cores) in the jax pass of tests/run.sh only, rather than
# three times the same.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "jax") != "jax",
                       reason="backend-independent: runs once, in the KERAS_BACKEND=jax pass"),
]


def table_rows(markdown):
    """`{variant: [tokens/s cell, ...]}` over every table whose header has a tokens/s column."""
    rows, column = {}, None
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            column = None
        elif "tokens/s" in cells and cells[0] == "variant":
            column = cells.index("tokens/s")
        elif column is not None and not cells[0].startswith("---"):
            rows.setdefault(cells[0], []).append(cells[column])
    return rows


def test_gpu_suite_smoke(tmp_path):
    for module in ("jax", "torch", "keras_hub"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    result = subprocess.run(["bash", SCRIPT, "--smoke", "--out", str(tmp_path)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    names = {v["name"] for v in report["variants"]}
    assert EXPECTED <= names
    rows = table_rows((tmp_path / "gpu_suite.md").read_text())
    assert set(rows) == names
    for name in names:
        values = [float(cell) for cell in rows[name]]  # "-" (a failed variant) would not parse
        assert values and min(values) > 0, (name, rows[name])
    # Honest reporting: a CPU smoke run never claims a target.
    assert {t["verdict"] for t in report["targets"]} == {"smoke run, not a measurement"}
    assert all(r["flash"]["on"] == "no" for r in report["rows"] if r["task"] == "train")
