"""The `kerasllm` command line, run as a user would, in a subprocess with the test's backend."""

import csv
import json
import os
import subprocess
import sys

import keras
import pytest

SENTENCES = [
    "ROMEO: But soft, what light through yonder window breaks?",
    "JULIET: O Romeo, Romeo, wherefore art thou Romeo?",
    "HAMLET: To be, or not to be, that is the question.",
]


def run_cli(*args, cwd=None):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "kerasllm", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "corpus.txt"
    data.write_text("\n".join(SENTENCES * 60))
    result = run_cli(
        "train", "--data", str(data), "--steps", "9", "--batch-size", "16", "--seq-len", "32",
        "--vocabulary-size", "300", "--output", str(root / "runs"), "--name", "smoke", "--sample-tokens", "5",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "runs" / "smoke", result.stdout


def test_train_writes_model_tokenizer_history_and_plot(trained_run):
    run_dir, stdout = trained_run
    for name in ("model.keras", "history.csv", "validation.csv", "loss.png", "run.json", "results.json"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "tokenizer").is_dir()
    assert "validation perplexity" in stdout and "saved model" in stdout and "ROMEO:" in stdout
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9  # exactly --steps, although that is more than one pass over the data
    assert rows[-1]["epoch"] != rows[0]["epoch"]
    assert {"loss", "perplexity", "learning_rate", "gradient_norm"} <= set(rows[0])
    assert float(rows[-1]["gradient_norm"]) > 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["perplexity"] == pytest.approx(2.718281828 ** results["loss"], rel=1e-3)


def test_generate_and_evaluate_read_the_run_folder(trained_run):
    run_dir, _ = trained_run
    generated = run_cli("generate", "--model", str(run_dir), "--prompt", "JULIET:", "--max-new-tokens", "5",
                        "--seed", "1")
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert generated.stdout.startswith("JULIET:")
    evaluated = run_cli("evaluate", "--model", str(run_dir))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "perplexity" in evaluated.stdout


def test_bad_arguments_give_clear_errors(tmp_path):
    unknown = run_cli("train", "--preset", "gpt5", "--data", str(tmp_path), "--output", str(tmp_path))
    assert unknown.returncode != 0
    missing = run_cli("generate", "--model", str(tmp_path / "nothing"))
    assert missing.returncode != 0 and "no model at" in missing.stderr
    negative = run_cli("train", "--steps", "0")
    assert negative.returncode != 0 and "--steps must be a positive integer" in negative.stderr
