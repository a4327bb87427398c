"""`kerasllm quantize` and `kerasllm factorize` on a tiny run folder (in this process, this backend)."""

import json
import os

import keras
import numpy as np
import pytest

import kerasllm
from kerasllm.cli.main import main
from kerasllm.quantization.factorize import low_rank_config


@pytest.fixture
def run_dir(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("ROMEO: But soft, what light through yonder window breaks?\n" * 40)
    run_dir = tmp_path / "run"
    tokenizer = kerasllm.tokenizers.CharacterTokenizer.train(corpus.read_text())
    model = kerasllm.models.CausalLM(vocabulary_size=tokenizer.vocabulary_size, num_layers=1, num_heads=2,
                                     hidden_dim=16, intermediate_dim=32, max_sequence_length=16)
    os.makedirs(run_dir)
    model.save(run_dir / "model.keras")
    tokenizer.save(str(run_dir / "tokenizer"))
    (run_dir / "run.json").write_text(json.dumps({"data": str(corpus), "batch_size": 4, "seq_len": 16}))
    return run_dir


def _table(output):
    """`{row name: (file MB, perplexity)}` from the printed table."""
    rows = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[-1].replace(".", "").isdigit() and parts[-4].replace(".", "").isdigit():
            rows[" ".join(parts[:-5])] = (float(parts[-4]), float(parts[-1]))
    return rows


def test_quantize_qat_int8_writes_a_real_int8_model_and_reports_sizes(run_dir, capsys):
    assert main(["quantize", "--model", str(run_dir), "--mode", "int8", "--qat-steps", "2"]) == 0
    output = capsys.readouterr().out
    path = run_dir / "model-int8-qat.keras"
    assert f"saved: {path}" in output
    rows = _table(output)
    assert set(rows) == {"float32", "int8 qat"}, output
    assert rows["int8 qat"][0] == round(os.path.getsize(path) / 2**20, 3)
    quantized = keras.saving.load_model(path)
    modes = {layer.path: layer.quantization_mode for layer in kerasllm.quantization.pruning.prunable_layers(quantized)}
    assert len(modes) == 6 and set(modes.values()) == {"int8"}, modes
    assert all(layer.kernel.dtype == "int8" for layer in kerasllm.quantization.pruning.prunable_layers(quantized))
    # The printed perplexity is the saved model's, on the run's validation split.
    tokenizer = kerasllm.tokenizers.load(str(run_dir / "tokenizer"))
    _, validation = kerasllm.data.language_modeling_splits(
        (run_dir.parent / "corpus.txt").read_text(), tokenizer, sequence_length=16, batch_size=4)
    quantized.compile(loss=kerasllm.losses.CausalLMLoss(), metrics=[kerasllm.metrics.Perplexity()])
    perplexity = quantized.evaluate(validation, return_dict=True, verbose=0)["perplexity"]
    np.testing.assert_allclose(perplexity, rows["int8 qat"][1], rtol=1e-2)

    with pytest.raises(SystemExit, match="--method gptq quantizes weights to 4 bits"):
        main(["quantize", "--model", str(run_dir), "--mode", "int8", "--method", "gptq"])


def test_quantize_gptq_writes_a_model_that_reloads(run_dir, capsys):
    args = ["--mode", "int4", "--method", "gptq", "--group-size", "8", "--calibration-samples", "4"]
    assert main(["quantize", "--model", str(run_dir), *args]) == 0
    path = run_dir / "model-int4-gptq.keras"
    assert f"saved: {path}" in capsys.readouterr().out
    quantized = keras.saving.load_model(path)
    layers = kerasllm.quantization.pruning.prunable_layers(quantized)
    assert len(layers) == 6 and {layer.quantization_mode for layer in layers} == {"gptq"}
    assert quantized.generate(np.array([1, 2, 3]), max_new_tokens=2, greedy=True).shape == (5,)


def test_factorize_fine_tunes_a_smaller_model_that_reloads(run_dir, capsys):
    assert main(["factorize", "--model", str(run_dir), "--rank", "2", "--steps", "2"]) == 0
    output = capsys.readouterr().out
    path = run_dir / "model-lowrank.keras"
    assert f"saved: {path}" in output and "6 layers factorized" in output
    rows = _table(output)
    assert set(rows) == {"float32", "factorized", "+2 steps"}, output
    small = keras.saving.load_model(path)
    ranks = low_rank_config(small)
    assert len(ranks) == 6 and set(ranks.values()) == {2}
    original = keras.saving.load_model(run_dir / "model.keras")
    # Each 16x16 projection keeps 2 * 32 weights, each 16x32 / 32x16 one 2 * 48.
    assert original.count_params() - small.count_params() == 4 * (256 - 64) + 2 * (512 - 96)
    assert rows["+2 steps"][0] == round(os.path.getsize(path) / 2**20, 3)

    with pytest.raises(SystemExit, match="rank=17 is larger than"):
        main(["factorize", "--model", str(run_dir), "--rank", "17"])


@pytest.mark.parametrize("steps, expected", [(7, 7), (60, 60), (61, 61)])
def test_fine_tune_runs_the_steps_asked_not_whole_epochs(run_dir, steps, expected):
    from kerasllm.cli.quantize import fine_tune

    train = kerasllm.data.language_modeling_splits(
        (run_dir.parent / "corpus.txt").read_text(), kerasllm.tokenizers.load(str(run_dir / "tokenizer")),
        sequence_length=16, batch_size=4)[0]
    assert len(train) == 30  # 60 and 61 steps need more than one pass (whole passes ran 60 and 90)
    model = keras.saving.load_model(run_dir / "model.keras")
    assert fine_tune(model, train, steps, 1e-3) == expected
    assert int(model.optimizer.iterations) == expected
