"""`kerasllm distill`: a student run distilled from a `kerasllm train` run, end to end on a tiny corpus."""

import contextlib
import csv
import io
import json
import shutil
import zipfile

import keras
import pytest

import kerasllm
from kerasllm.cli.main import main

# One xdist worker runs this file, so its module fixtures are built once (tests/run.sh).
pytestmark = pytest.mark.xdist_group("test_cli_distill")

SENTENCES = [
    "ROMEO: But soft, what light through yonder window breaks?",
    "JULIET: O Romeo, Romeo, wherefore art thou Romeo?",
]
SMALL = ["--batch-size", "4", "--seq-len", "16", "--sample-tokens", "3"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    data = root / "corpus.txt"
    data.write_text("\n".join(SENTENCES * 12))
    # No validation split: the teacher trains faster, and the --preset run below inherits that.
    code = main(["train", "--data", str(data), "--steps", "2", "--tokenizer", "char", "--output", str(root / "runs"),
                 "--name", "teacher", "--validation-fraction", "0", *SMALL])
    assert code == 0
    return root, root / "runs" / "teacher"


@pytest.fixture(scope="module")
def layers_run(teacher_run):
    root, teacher_dir = teacher_run
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["distill", "--teacher", str(teacher_dir), "--student-layers", "1", "--steps", "3", "--top-k", "5",
                     "--validation-fraction", "0.2", "--teacher-precision", "mixed_bfloat16",
                     "--output", str(root / "runs"), "--name", "student",
                     "--batch-size", "4", "--sample-tokens", "3"])
    assert code == 0
    return root / "runs" / "student", stdout.getvalue()


def read_history(run_dir):
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def test_student_layers_run_writes_a_run_folder(teacher_run, layers_run):
    _, teacher_dir = teacher_run
    layers_run, stdout = layers_run
    assert "validation perplexity: student" in stdout and "| teacher" in stdout
    assert "parameters, mixed_bfloat16" in stdout  # --teacher-precision
    for name in ("model.keras", "history.csv", "validation.csv", "loss.png", "run.json", "results.json"):
        assert (layers_run / name).exists(), name
    assert (layers_run / "tokenizer").is_dir()
    rows = read_history(layers_run)
    assert len(rows) == 3  # exactly --steps
    assert {"loss", "distillation_loss", "label_loss", "perplexity", "learning_rate"} <= set(rows[0])
    for row in rows:  # alpha 0.5: the logged loss is the mean of the two parts
        expected = 0.5 * float(row["distillation_loss"]) + 0.5 * float(row["label_loss"])
        assert float(row["loss"]) == pytest.approx(expected, rel=1e-4)
    assert float(rows[-1]["distillation_loss"]) > 0
    results = json.loads((layers_run / "results.json").read_text())
    assert {"loss", "perplexity", "teacher_loss", "teacher_perplexity"} <= set(results)
    assert results["teacher_perplexity"] == pytest.approx(2.718281828 ** results["teacher_loss"], rel=1e-3)
    config = json.loads((layers_run / "run.json").read_text())
    teacher_config = json.loads((teacher_dir / "run.json").read_text())
    # The student sees the teacher's corpus unless told otherwise.
    for key in ("data", "seq_len", "seed"):
        assert config[key] == teacher_config[key], key
    assert config["validation_fraction"] == 0.2 != teacher_config["validation_fraction"]
    assert config["command"] == "distill" and config["student_layers"] == 1 and config["top_k"] == 5


def test_saved_student_reloads_alone_in_a_fresh_process(teacher_run, layers_run, run_in_fresh_process):
    _, teacher_dir = teacher_run
    layers_run, _ = layers_run
    teacher = kerasllm.utils.load_model(str(teacher_dir / "model.keras"))
    expected = kerasllm.models.CausalLM(**{**teacher.get_config(), "num_layers": 1, "name": "expected"})
    out = run_in_fresh_process(
        "import kerasllm\n"
        f"model = kerasllm.utils.load_model({str(layers_run / 'model.keras')!r})\n"
        "print(type(model).__name__, model.num_layers, model.count_params(), len(model.weights))\n"
    )
    assert out.strip().splitlines()[-1].split() == [
        "CausalLM", "1", str(expected.count_params()), str(len(expected.weights))
    ]
    assert expected.count_params() < teacher.count_params()
    # The file stores the student's weights only: no teacher (nor its weights) travelled along.
    with zipfile.ZipFile(layers_run / "model.keras") as student_file, \
            zipfile.ZipFile(teacher_dir / "model.keras") as teacher_file:
        student_bytes = student_file.getinfo("model.weights.h5").file_size
        teacher_bytes = teacher_file.getinfo("model.weights.h5").file_size
    assert student_bytes < 0.6 * teacher_bytes


def test_preset_student_with_another_loss(teacher_run):
    root, teacher_dir = teacher_run
    code = main(["distill", "--teacher", str(teacher_dir), "--preset", "tiny", "--loss", "jsd", "--alpha", "1.0",
                 "--steps", "2", "--output", str(root / "runs"), "--name", "preset", *SMALL])
    assert code == 0
    run_dir = root / "runs" / "preset"
    # The teacher's split (no validation) is inherited.
    assert json.loads((run_dir / "run.json").read_text())["validation_fraction"] == 0.0
    assert not (run_dir / "validation.csv").exists()
    assert json.loads((run_dir / "results.json").read_text()) == {}
    rows = read_history(run_dir)
    assert len(rows) == 2
    for row in rows:  # alpha 1: only the distillation loss trains
        assert float(row["loss"]) == pytest.approx(float(row["distillation_loss"]), rel=1e-4)
    student = kerasllm.utils.load_model(str(run_dir / "model.keras"))
    preset = kerasllm.models.CausalLM.presets["tiny"]
    assert (student.num_layers, student.hidden_dim) == (preset["num_layers"], preset["hidden_dim"])
    assert student.vocabulary_size == kerasllm.tokenizers.load(str(run_dir / "tokenizer")).vocabulary_size


def bad(argv):
    with pytest.raises(SystemExit) as error:
        main(["distill", *argv])
    return str(error.value)


def test_bad_inputs_give_clear_errors(teacher_run, tmp_path):
    root, teacher_dir = teacher_run
    out = ["--output", str(tmp_path / "runs"), "--name", "bad", *SMALL]
    assert "kerasllm: no teacher at" in bad(["--teacher", str(tmp_path / "nothing"), *out])
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(teacher_dir / "model.keras", lone / "teacher.keras")
    assert "--tokenizer" in bad(["--teacher", str(lone / "teacher.keras"), *out])
    message = bad(["--teacher", str(teacher_dir), "--preset", "tiny", "--student-layers", "1", *out])
    assert message.startswith("kerasllm: --preset and --student-layers")
    assert "below the teacher's 4 layers" in bad(["--teacher", str(teacher_dir), "--student-layers", "4", *out])
    assert "--student-layers must be a positive integer" in bad(["--teacher", str(teacher_dir), "--student-layers", "0"])
    assert "`alpha` must be" in bad(["--teacher", str(teacher_dir), "--alpha", "1.5", "--student-layers", "1", *out])
    # A tokenizer with more tokens than the teacher's vocabulary.
    wide = kerasllm.tokenizers.CharacterTokenizer.train("".join(chr(c) for c in range(33, 127)))
    wide.save(str(tmp_path / "wide"))
    message = bad(["--teacher", str(teacher_dir), "--tokenizer", str(tmp_path / "wide"), *out])
    assert message.startswith("kerasllm: ") and "vocabulary" in message
