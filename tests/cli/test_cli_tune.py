"""`kerasllm tune`: a tiny random search end to end on a small text file, in-process."""

import contextlib
import io
import json
import math

import pytest

from kerasllm.cli.main import main

pytest.importorskip("keras_tuner")
pytestmark = pytest.mark.filterwarnings("ignore:currentThread:DeprecationWarning", "ignore:getName:DeprecationWarning")

SENTENCES = [
    "ROMEO: But soft, what light through yonder window breaks?",
    "JULIET: O Romeo, Romeo, wherefore art thou Romeo?",
]
# Width 16 or 32 on the tiny preset (4 blocks, 4 heads), trials of 3 steps of 2 or 4 sequences of 16 characters.
SMALL = ["--tokenizer", "char", "--seq-len", "16", "--steps", "3", "--max-trials", "2", "--batch-sizes", "2", "4",
         "--warmup-steps", "0", "1", "--widths", "16", "32", "--learning-rate-range", "1e-3", "1e-2", "--run-eagerly"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune") / "corpus.txt"
    path.write_text("\n".join(SENTENCES * 12))
    return path


def test_tune_prints_the_trials_and_writes_the_best_config(corpus, tmp_path):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["tune", "--data", str(corpus), "--output", str(tmp_path), *SMALL])
    assert code == 0
    results = json.loads((tmp_path / "tune" / "results.json").read_text())
    trials = results["trials"]
    assert len(trials) == 2 and results["algorithm"] == "random"
    assert results["best_val_loss"] == min(t["val_loss"] for t in trials)
    assert results["best_perplexity"] == pytest.approx(math.exp(results["best_val_loss"]))
    for trial in trials:
        values = trial["hyperparameters"]
        assert 1e-3 <= values["learning_rate"] <= 1e-2 and values["batch_size"] in (2, 4)
        assert values["warmup_steps"] in (0, 1) and values["hidden_dim"] in (16, 32)
    best = results["best_model_config"]
    assert best["hidden_dim"] == results["best_hyperparameters"]["hidden_dim"]
    assert best["intermediate_dim"] == 4 * best["hidden_dim"] and best["num_layers"] == 4  # the tiny preset's
    assert best["max_sequence_length"] == 256 and best["vocabulary_size"] < 60  # characters of the corpus
    assert results["arguments"]["steps"] == 3
    printed = stdout.getvalue()
    table = printed[printed.index("trial ") :].splitlines()
    assert "learning_rate" in table[0] and "hidden_dim" in table[0] and "val loss" in table[0]
    rows = {line.split()[0]: line.split() for line in table[1:3]}
    best_id = results["best_trial_id"] + "*"
    assert best_id in rows and float(rows[best_id][-2]) == pytest.approx(results["best_val_loss"], abs=1e-4)
    assert "saved results:" in printed


def bad(argv):
    with pytest.raises(SystemExit) as error:
        main(["tune", *argv])
    return str(error.value)


def test_bad_arguments_give_clear_errors(corpus, tmp_path):
    out = ["--data", str(corpus), "--output", str(tmp_path), "--tokenizer", "char", "--seq-len", "16",
           "--batch-sizes", "2", "4"]
    assert "min < max" in bad([*out, "--learning-rate-range", "1e-2", "1e-3"])
    assert "MIN MAX (or one fixed value)" in bad([*out, "--learning-rate-range", "1e-4", "1e-3", "1e-2"])
    assert "--steps must be a positive integer" in bad([*out, "--steps", "0"])
    assert "no step for the cosine decay" in bad([*out, "--steps", "3", "--warmup-steps", "0", "5"])
    assert "search space is empty" in bad([*out, "--learning-rate-range", "1e-3", "--batch-sizes", "4",
                                           "--warmup-steps", "0"])
    assert bad([*out, "--algorithm", "grid"]) == "2"  # argparse: an invalid choice
    assert "too few for one batch" in bad([*out, "--seq-len", "200", "--batch-sizes", "8", "16"])
    assert not (tmp_path / "tune" / "results.json").exists()


@pytest.mark.parametrize("flag, expected", [((), "auto"), (("--no-jit-compile",), False)])
def test_no_jit_compile_reaches_the_search(corpus, tmp_path, monkeypatch, flag, expected):
    import kerasllm

    seen = {}

    def search(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("stopped after the arguments were read")

    monkeypatch.setattr(kerasllm.tuning, "search", search)
    argv = ["tune", "--data", str(corpus), "--output", str(tmp_path), "--tokenizer", "char", "--seq-len", "16",
            "--batch-sizes", "2", "4", *flag]
    with pytest.raises(SystemExit, match="stopped after the arguments were read"):
        main(argv)
    assert seen["jit_compile"] == expected
