"""The "Start from a pretrained model" tutorial runs as written (fewer steps, a slice of the corpus)."""

import pathlib
import re

import pytest

pytest.importorskip("transformers")
GUIDE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "guides" / "pretrained.md"


def test_pretrained_tutorial_runs(tmp_path, run_in_fresh_process):
    text = GUIDE.read_text()
    tutorial = text.split("## With a real model")[0]  # the last section needs downloads
    script = "\n".join(re.findall(r"```python\n(.*?)```", tutorial, flags=re.S))
    assert "STEPS = 200" in script and "from_preset(CHECKPOINT)" in script and "export_to_transformers" in script
    script = script.replace("STEPS = 200", "STEPS = 3")
    prelude = (
        "import kerasllm, os\n"
        f"os.chdir({str(tmp_path)!r})\n"
        "_full = kerasllm.datasets.shakespeare\n"
        "kerasllm.datasets.shakespeare = lambda *a, **k: _full(*a, **k)[:200_000]\n"
    )
    out = run_in_fresh_process(prelude + script + "\nprint('TUTORIAL OK')\n", timeout=900)
    assert "TUTORIAL OK" in out
    differences = [float(x) for x in re.findall(r"max difference: ([0-9.e-]+)", out)]
    assert len(differences) == 2 and max(differences) < 1e-4, out
    assert (tmp_path / "student-hf" / "model.safetensors").exists()
