"""The command line on pretrained checkpoints: Hugging Face model directories wherever a run folder is read
(`--model`, `--teacher`, `--init`), and `kerasllm export` to the transformers format.

The commands run in this process (`main(argv)`): the subprocess tests of tests/cli/test_cli.py already
cover the real entry point, and a fresh interpreter per command would cost an import of the backend each.
"""

import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest

import kerasllm
from kerasllm.cli.main import main

pytest.importorskip("transformers")
import hf_model_fixtures  # noqa: E402  (tests/ is on sys.path through tests/conftest.py)
import hf_tokenizer_fixtures  # noqa: E402

# One xdist worker runs this file, so the module fixtures are built once (tests/run.sh).
pytestmark = pytest.mark.xdist_group("test_cli_pretrained")

SENTENCES = [
    "ROMEO: But soft, what light through yonder window breaks?",
    "JULIET: O Romeo, Romeo, wherefore art thou Romeo?",
]
SMALL = ["--seq-len", "16", "--batch-size", "2"]
# Every generation continues "ROMEO:" by 3 tokens: JAX compiles each eager operation once per shape, so the
# commands after the first reuse its compiled decoding steps.


def run(*argv):
    """`kerasllm ARGV` in this process; returns its stdout (and fails on a non-zero exit code)."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(list(argv))
    assert code == 0
    return stdout.getvalue()


def refused(*argv):
    """The message of the `kerasllm: ...` error that `kerasllm ARGV` exits with."""
    with pytest.raises(SystemExit) as error:
        main(list(argv))
    message = str(error.value)
    assert message.startswith("kerasllm: ") and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny Llama 3 checkpoint with its tokenizer, a small corpus, and the transformers model as reference."""
    root = tmp_path_factory.mktemp("pretrained")
    directory = root / "llama"
    size = hf_tokenizer_fixtures.make_tokenizer("llama3", directory, vocabulary_size=300)
    reference = hf_model_fixtures.make_checkpoint("llama3", directory, vocab_size=size, num_hidden_layers=2)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES * 6))
    return root, directory, corpus, reference


def relative(path):
    """A variable's path without the model's own name (a second model in a process gets another one)."""
    return path.split("/", 1)[1]


def listing(directory):
    return {name: os.path.getsize(directory / name) for name in os.listdir(directory)}


def test_a_hugging_face_directory_reads_like_a_run(pretrained):
    from kerasllm.cli import run_folder

    _, directory, _, _ = pretrained
    model, tokenizer, config = run_folder.load(str(directory))
    assert isinstance(tokenizer, kerasllm.tokenizers.HuggingFaceTokenizer) and model.vocabulary_size == 300
    # No run.json: the settings the commands take from a run are the pretrained defaults (data: Shakespeare).
    assert config == {"batch_size": 8, "seq_len": 128, "validation_fraction": 0.1, "seed": 0}


def test_generate_continues_like_transformers(pretrained):
    import torch

    _, directory, _, reference = pretrained
    printed = run("generate", "--model", str(directory), "--prompt", "ROMEO:", "--max-new-tokens", "3", "--greedy")
    tokenizer = kerasllm.tokenizers.load(directory)
    ids = tokenizer.encode("ROMEO:")
    for _ in range(3):  # greedy decoding with the reference model
        with torch.no_grad():
            ids.append(int(reference(torch.tensor([ids])).logits[0, -1].argmax()))
    assert printed.strip() == tokenizer.decode(ids).strip()


def test_evaluate_scores_the_checkpoint_like_transformers(pretrained, tmp_path):
    import torch

    _, directory, corpus, reference = pretrained
    run("evaluate", "--model", str(directory), "--data", str(corpus), *SMALL, "--output", str(tmp_path / "scores.json"))
    report = json.loads((tmp_path / "scores.json").read_text())
    # The reference: the transformers model's mean next-token loss on the same windows of --data.
    tokenizer = kerasllm.tokenizers.load(directory)
    data, _ = kerasllm.data.language_modeling_splits(corpus.read_text(), tokenizer, sequence_length=16, batch_size=2,
                                                     validation_fraction=0.0, shuffle=False)
    x = np.concatenate([data[i][0] for i in range(len(data))])
    y = np.concatenate([data[i][1] for i in range(len(data))])
    with torch.no_grad():
        logits = reference(torch.tensor(x, dtype=torch.long)).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 torch.tensor(y, dtype=torch.long).reshape(-1))
    assert report["split"] == "data" and report["tokens"] == x.size
    assert report["loss"] == pytest.approx(float(loss), rel=1e-4)


def test_train_init_fine_tunes_lora_adapters_and_the_run_generates(pretrained):
    root, directory, corpus, _ = pretrained
    before = listing(directory)
    printed = run("train", "--init", str(directory), "--lora-rank", "2", "--data", str(corpus), "--steps", "2", *SMALL,
                  "--sample-tokens", "3", "--output", str(root / "runs"), "--name", "tuned")
    assert "LoRA rank 2 on query, value" in printed and "HuggingFaceTokenizer" in printed
    run_dir = root / "runs" / "tuned"
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 2  # exactly --steps
    config = json.loads((run_dir / "run.json").read_text())
    assert (config["batch_size"], config["seq_len"], config["learning_rate"]) == (2, 16, 2e-4)
    # The run keeps the checkpoint's tokenizer, in the Hugging Face format too.
    assert (run_dir / "tokenizer" / "tokenizer.json").exists()
    saved = kerasllm.tokenizers.load(run_dir / "tokenizer")
    assert saved.encode(SENTENCES[0]) == kerasllm.tokenizers.load(directory).encode(SENTENCES[0])
    # LoRA trained the adapters only: the query kernels moved (adapters folded in), the rest did not.
    tuned = kerasllm.utils.load_model(str(run_dir / "model.keras"))
    original = kerasllm.models.CausalLM.from_preset(str(directory))
    weights = {relative(v.path): np.asarray(v) for v in original.weights}
    moved = {path for path, value in ((relative(v.path), np.asarray(v)) for v in tuned.weights)
             if not np.array_equal(value, weights.get(path))}
    moved -= {path for path in moved if "lora_kernel" in path}  # the adapters, now zero again
    assert moved and all(path.endswith(("query/kernel", "value/kernel")) for path in moved), moved
    assert listing(directory) == before  # nothing was written into the checkpoint

    printed = run("generate", "--model", str(run_dir), "--prompt", "ROMEO:", "--max-new-tokens", "3", "--seed", "1")
    assert printed.startswith("ROMEO:")


def test_distill_a_student_from_a_hugging_face_teacher(pretrained):
    root, directory, corpus, _ = pretrained
    printed = run("distill", "--teacher", str(directory), "--student-layers", "1", "--steps", "2",
                  "--data", str(corpus), *SMALL, "--validation-fraction", "0", "--sample-tokens", "3",
                  "--output", str(root / "runs"), "--name", "student")
    assert "student: 1 of the teacher's layers" in printed
    assert json.loads((root / "runs" / "student" / "run.json").read_text())["seed"] == 0  # the pretrained default
    student = kerasllm.utils.load_model(str(root / "runs" / "student" / "model.keras"))
    assert (student.num_layers, student.vocabulary_size) == (1, 300)
    assert (root / "runs" / "student" / "tokenizer" / "tokenizer.json").exists()


def test_quantize_writes_next_to_runs_not_into_the_checkpoint(pretrained, tmp_path, monkeypatch):
    _, directory, corpus, _ = pretrained
    before = listing(directory)
    monkeypatch.chdir(tmp_path)
    run("quantize", "--model", str(directory), "--mode", "int8", "--data", str(corpus), *SMALL)
    output = tmp_path / "runs" / "llama" / "model-int8.keras"
    quantized = kerasllm.utils.load_model(str(output))
    assert quantized.backbone.blocks[0].attention.query.quantization_mode == "int8"
    assert kerasllm.tokenizers.load(output.parent / "tokenizer").vocabulary_size == 300  # a run like any other
    assert listing(directory) == before


@pytest.fixture(scope="module")
def preset_run(tmp_path_factory):
    """A run folder as `kerasllm train --preset tiny` writes it (model.keras and tokenizer/), built directly."""
    import keras

    run_dir = tmp_path_factory.mktemp("preset") / "run"
    tokenizer = kerasllm.tokenizers.BytePairTokenizer.train("\n".join(SENTENCES * 4), vocabulary_size=300)
    keras.utils.set_random_seed(0)
    model = kerasllm.models.CausalLM.from_preset("tiny", vocabulary_size=tokenizer.vocabulary_size,
                                                 max_sequence_length=64)
    os.makedirs(run_dir)
    model.save(run_dir / "model.keras")
    tokenizer.save(str(run_dir / "tokenizer"))
    return run_dir, model, tokenizer


def test_export_a_run_that_transformers_loads(preset_run, tmp_path):
    import keras
    import torch
    import transformers

    run_dir, model, tokenizer = preset_run
    printed = run("export", "--model", str(run_dir), "--output", str(tmp_path / "hf"))
    assert "model_type gpt2" in printed and "model.safetensors" in printed and "tokenizer.json" in printed
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    ids = hf_model_fixtures.token_ids(batch=2, length=12) % tokenizer.vocabulary_size
    with torch.no_grad():
        expected = loaded(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(ids)), expected, atol=1e-4)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert hf_tokenizer(SENTENCES[1])["input_ids"] == tokenizer.encode(SENTENCES[1])


def test_export_a_hugging_face_directory_round_trip(pretrained, tmp_path):
    import transformers

    _, directory, _, reference = pretrained
    run("export", "--model", str(directory), "--output", str(tmp_path / "again"))
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "again")).eval()
    ids = hf_model_fixtures.token_ids(batch=1, length=10) % 300
    np.testing.assert_allclose(hf_model_fixtures.reference_logits(loaded, ids),
                               hf_model_fixtures.reference_logits(reference, ids), atol=1e-4)
    original = transformers.AutoTokenizer.from_pretrained(str(directory))
    again = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "again"))
    assert again(SENTENCES[0])["input_ids"] == original(SENTENCES[0])["input_ids"]


def test_bad_inputs_give_one_line_errors(pretrained, preset_run, tmp_path):
    _, directory, _, _ = pretrained
    run_dir, _, _ = preset_run
    (tmp_path / "empty").mkdir()
    message = refused("generate", "--model", str(tmp_path / "empty"))
    assert "holds neither model.keras" in message and "config.json (a Hugging Face model directory)" in message
    untokenized = tmp_path / "untokenized"
    untokenized.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(directory / name, untokenized / name)
    for argv in (["evaluate", "--model"], ["train", "--init"]):
        assert "without a tokenizer (no tokenizer.json); pass --tokenizer DIR" in refused(*argv, str(untokenized))
    for argv in (["quantize", "--mode", "int8", "--output", str(directory / "q.keras")],
                 ["export", "--output", str(directory / "exported")]):
        assert "kerasllm never writes into" in refused(*argv, "--model", str(directory))
    assert "--init and --preset" in refused("train", "--init", str(directory), "--preset", "tiny")
    assert "--tokenizer bpe trains a new tokenizer" in refused("train", "--init", str(directory), "--tokenizer", "bpe")
    assert "pass --init DIR" in refused("train", "--lora-rank", "4")
    assert "holds the --model" in refused("export", "--model", str(run_dir / "model.keras"), "--output", str(run_dir))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    assert "pass --overwrite" in refused("export", "--model", str(run_dir), "--output", str(tmp_path / "full"))
