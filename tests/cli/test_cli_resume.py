"""`kerasllm train --checkpoint-every N` and `--resume`: a resumed run ends with the uninterrupted weights."""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

import kerasllm
from kerasllm.cli.main import main

SENTENCES = [
    "ROMEO: But soft, what light through yonder window breaks?",
    "JULIET: O Romeo, Romeo, wherefore art thou Romeo?",
]


def run_cli(*args):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "kerasllm", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_resume_continues_from_the_newest_checkpoint(tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_text("\n".join(SENTENCES * 40))
    args = ["train", "--data", str(data), "--steps", "4", "--batch-size", "4", "--seq-len", "16",
            "--tokenizer", "char", "--output", str(tmp_path / "runs"), "--name", "r", "--sample-tokens", "2",
            "--checkpoint-every", "1"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "runs" / "r"
    checkpoints = run_dir / "checkpoints"
    assert sorted(os.listdir(checkpoints))[-1] == "step-000004"
    shutil.copy(run_dir / "model.keras", tmp_path / "uninterrupted.keras")

    with pytest.raises(SystemExit, match="Pass --resume"):  # in this process: a refusal needs no fresh one
        main(args)

    # As if the run had died after step 2.
    for name in ("step-000003", "step-000004"):
        shutil.rmtree(checkpoints / name)
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "step-000002" in resumed.stdout
    # history.csv goes on from the checkpoint: steps 1..4 once each.
    steps = [line.split(",")[0] for line in (run_dir / "history.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4"], steps
    expected = kerasllm.utils.load_model(str(tmp_path / "uninterrupted.keras"))
    got = kerasllm.utils.load_model(str(run_dir / "model.keras"))
    for a, b in zip(got.get_weights(), expected.get_weights()):
        np.testing.assert_array_equal(a, b)
