"""`kerasllm prune` on a run folder, in a subprocess with the test's backend."""

import json
import os
import subprocess
import sys

import keras
import numpy as np

import kerasllm


def test_prune_fine_tunes_to_the_sparsity_and_saves_a_plain_model(tmp_path):
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

    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run(
        [sys.executable, "-m", "kerasllm", "prune", "--model", str(run_dir), "--sparsity", "0.5",
         "--structure", "2:4", "--steps", "4", "--frequency", "2"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pruned" in result.stdout and "model-pruned.keras" in result.stdout
    pruned = keras.saving.load_model(run_dir / "model-pruned.keras")
    assert not pruned.non_trainable_variables
    for layer in kerasllm.quantization.pruning.prunable_layers(pruned):
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        inputs, outputs = kernel.shape
        np.testing.assert_array_equal((kernel != 0).reshape(inputs // 4, 4, outputs).sum(axis=1), 2)

    bad = subprocess.run(
        [sys.executable, "-m", "kerasllm", "prune", "--model", str(run_dir), "--sparsity", "0.3",
         "--structure", "2:4"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert bad.returncode != 0 and "target_sparsity=0.5" in bad.stderr
