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
