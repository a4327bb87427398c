"""The README's script runs as written (on a slice of the corpus, to stay fast), on every backend."""

import pathlib
import re


def test_readme_script_runs(tmp_path, run_in_fresh_process):
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    script = re.search(r"```python\n(.*?)```", readme, flags=re.S).group(1)
    assert "kerasllm.models.CausalLM.from_preset" in script
    # Same code, smaller corpus: keep the first 150K characters of the built-in Shakespeare.
    prelude = (
        "import kerasllm, os\n"
        f"os.chdir({str(tmp_path)!r})\n"
        "_full = kerasllm.datasets.shakespeare\n"
        "kerasllm.datasets.shakespeare = lambda *a, **k: _full(*a, **k)[:150_000]\n"
    )
    out = run_in_fresh_process(prelude + script + "\nprint('README OK')\n", timeout=900)
    assert "ROMEO:" in out and "README OK" in out
    assert (tmp_path / "m.keras").exists()


def test_readme_pretrained_script_runs(tmp_path, run_in_fresh_process):
    import pytest

    pytest.importorskip("transformers")
    import hf_model_fixtures
    import hf_tokenizer_fixtures

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    script = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[1]
    assert 'from_preset("SmolLM2-135M")' in script and "steps_per_epoch=100" in script
    # A tiny Llama-family stand-in for the downloaded checkpoint, with a GPT-2 style tokenizer as SmolLM2's.
    size = hf_tokenizer_fixtures.make_tokenizer("gpt2", tmp_path / "SmolLM2-135M", vocabulary_size=512)
    hf_model_fixtures.make_checkpoint("llama2", tmp_path / "SmolLM2-135M", vocab_size=size)
    prelude = (
        "import kerasllm, os\n"
        f"os.chdir({str(tmp_path)!r})\n"
        "_full = kerasllm.datasets.shakespeare\n"
        "kerasllm.datasets.shakespeare = lambda *a, **k: _full(*a, **k)[:60_000]\n"
    )
    script = script.replace("steps_per_epoch=100", "steps_per_epoch=2")
    out = run_in_fresh_process(prelude + script + "\nprint('README OK')\n", timeout=900)
    assert "ROMEO:" in out and "README OK" in out
    assert (tmp_path / "SmolLM2-135M-shakespeare" / "model.safetensors").exists()
