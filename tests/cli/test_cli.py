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
    # In this process: the commands above already run the real entry point in subprocesses, and a
    # fresh interpreter per refusal would cost an import of the backend each.
    from kerasllm.cli.main import main

    # Refused before the (here empty) corpus is read or a tokenizer trained.
    with pytest.raises(SystemExit, match="unknown --preset 'gpt5'; choose one of: .*tiny"):
        main(["train", "--preset", "gpt5", "--data", str(tmp_path), "--output", str(tmp_path)])
    for command in (["distill", "--teacher", str(tmp_path)], ["tune", "--data", str(tmp_path)]):
        with pytest.raises(SystemExit, match="unknown --preset 'gpt5'"):
            main([*command, "--preset", "gpt5", "--output", str(tmp_path)])
    with pytest.raises(SystemExit, match="no model at"):
        main(["generate", "--model", str(tmp_path / "nothing")])
    with pytest.raises(SystemExit, match="--steps must be a positive integer"):
        main(["train", "--steps", "0"])


@pytest.fixture(scope="module")
def memorizing_run(tmp_path_factory):
    """A run folder whose small character model has learned the corpus well enough to continue it."""
    import kerasllm

    root = tmp_path_factory.mktemp("memorizing")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES[:2] * 12))
    tokenizer = kerasllm.tokenizers.CharacterTokenizer.train(corpus.read_text())
    keras.utils.set_random_seed(0)
    model = kerasllm.models.CausalLM(vocabulary_size=tokenizer.vocabulary_size, num_layers=1, num_heads=2,
                                     hidden_dim=32, intermediate_dim=64, max_sequence_length=32)
    config = {"data": str(corpus), "batch_size": 8, "seq_len": 32, "validation_fraction": 0.3}
    train, _ = kerasllm.data.language_modeling_splits(corpus.read_text(), tokenizer, sequence_length=32,
                                                      batch_size=8, validation_fraction=0.3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=kerasllm.losses.CausalLMLoss())
    model.fit(train, epochs=25, verbose=0)
    run_dir = root / "run"
    os.makedirs(run_dir)
    model.save(run_dir / "model.keras")
    tokenizer.save(str(run_dir / "tokenizer"))
    (run_dir / "run.json").write_text(json.dumps(config))
    return run_dir


def test_evaluate_generate_reports_bleu_and_rouge_of_its_decoded_texts(memorizing_run, tmp_path):
    import contextlib
    import io

    import numpy as np
    import sacrebleu
    from rouge_score import rouge_scorer

    import kerasllm
    from kerasllm.cli.main import main

    run_dir = memorizing_run
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["evaluate", "--model", str(run_dir), "--generate", "4", "--prompt-tokens", "12",
                     "--reference-tokens", "20", "--output", str(tmp_path / "scores.json")])
    assert code == 0
    report = json.loads((tmp_path / "scores.json").read_text())
    generations = report["generations"]
    assert len(generations) == 4 and (report["prompt_tokens"], report["reference_tokens"]) == (12, 20)
    references = [g["reference"] for g in generations]
    hypotheses = [g["hypothesis"] for g in generations]
    # The scores are those of the reference libraries on the very texts the command decoded.
    assert report["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score / 100, abs=1e-9)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    scores = [scorer.score(r, h) for r, h in zip(references, hypotheses)]
    for key, name in (("rouge_1", "rouge1"), ("rouge_2", "rouge2"), ("rouge_l", "rougeL")):
        assert report[key] == pytest.approx(np.mean([s[name].fmeasure for s in scores]), abs=1e-9), key
    assert report["rouge_1"] > 0 and report["bleu"] > 0  # the model learned the text: the scores are not all 0
    # Prompt and reference are consecutive tokens of held-out windows of the run's validation split.
    from kerasllm.cli import run_folder

    model, tokenizer, config = run_folder.load(str(run_dir))
    _, validation = kerasllm.data.language_modeling_splits(
        kerasllm.data.load_text(config["data"]), tokenizer, sequence_length=config["seq_len"],
        batch_size=config["batch_size"], validation_fraction=config["validation_fraction"], shuffle=False)
    windows = validation.windows[np.linspace(0, len(validation.windows) - 1, 4).round().astype(int)]
    assert [g["prompt"] for g in generations] == [tokenizer.decode(w[:12]) for w in windows]
    assert references == [tokenizer.decode(w[12:32]) for w in windows]
    expected = model.generate(windows[:, :12], max_new_tokens=20, greedy=True, stop_token_ids=())
    assert hypotheses == [tokenizer.decode(row[12:]) for row in expected]
    printed = stdout.getvalue()
    assert "perplexity" in printed and "rouge_l" in printed and f"{report['bleu']:.4f}" in printed
    with pytest.raises(SystemExit, match="exceed the 32 tokens"):
        main(["evaluate", "--model", str(run_dir), "--generate", "2", "--prompt-tokens", "30",
              "--reference-tokens", "4"])
