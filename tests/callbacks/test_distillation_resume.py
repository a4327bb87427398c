"""Exact resume of a distillation run (features, a scheduled alpha) killed with SIGKILL mid-epoch."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np

# argv: checkpoint directory, output .npz, kill_after_step (0: run to the end).
SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import keras, numpy as np
    import kerasllm

    keras.config.disable_interactive_logging()
    directory, output, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    keras.utils.set_random_seed(0)
    ids = np.random.default_rng(0).integers(0, 11, size=5 * 2 * 9 + 3)
    data = kerasllm.data.LanguageModelingDataset(ids, sequence_length=8, batch_size=2, seed=5)
    teacher = kerasllm.models.CausalLM(vocabulary_size=11, num_layers=2, num_heads=2, hidden_dim=16,
                                       intermediate_dim=32, max_sequence_length=8)
    teacher(np.zeros((1, 8), "int32"))
    student = kerasllm.models.CausalLM(vocabulary_size=11, num_layers=1, num_heads=2, hidden_dim=8,
                                       intermediate_dim=16, max_sequence_length=8, dropout=0.1)
    student.compile(optimizer=kerasllm.optimizers.create_optimizer(1e-2, total_steps=10, warmup_steps=2),
                    loss=kerasllm.losses.CausalLMLoss())
    distill = kerasllm.callbacks.Distillation(teacher, alpha=lambda step: min(1.0, 0.1 * step),
                                              features="hidden_states", attention=True)
    checkpoint = kerasllm.callbacks.Checkpoint(directory, every_n_steps=1, keep=2, dataset=data,
                                               callbacks=[distill])

    class Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if checkpoint.step == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    student.fit(data, epochs=2, shuffle=False, verbose=0, callbacks=[distill, checkpoint, Kill()])
    np.savez(output, step=checkpoint.step, iterations=int(student.optimizer.iterations),
             n_weights=len(student.weights), **{f"w{i}": w for i, w in enumerate(student.get_weights())})
    """
)


def _run(tmp_path, directory, kill_after):
    script = tmp_path / "distill.py"
    script.write_text(SCRIPT)
    output = tmp_path / f"out-{kill_after}.npz"
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run([sys.executable, str(script), str(directory), str(output), str(kill_after)],
                            capture_output=True, text=True, env=env, timeout=300)
    if kill_after:
        assert result.returncode == -9, result.stderr[-3000:]
        return None
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(output))


def test_killed_distillation_run_resumes_to_the_uninterrupted_weights(tmp_path):
    reference = _run(tmp_path, tmp_path / "reference", 0)
    _run(tmp_path, tmp_path / "resumed", 4)
    resumed = _run(tmp_path, tmp_path / "resumed", 0)
    assert int(resumed["step"]) == int(reference["step"]) == 10
    assert int(resumed["iterations"]) == 10
    assert int(resumed["n_weights"]) == int(reference["n_weights"])  # no projection left in the student
    for i in range(int(reference["n_weights"])):
        np.testing.assert_array_equal(resumed[f"w{i}"], reference[f"w{i}"], err_msg=f"weight {i}")
