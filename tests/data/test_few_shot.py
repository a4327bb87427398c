"""few_shot_prompt: layout, custom templates and fields, errors."""

import pytest

import kerasllm


def test_default_template():
    prompt = kerasllm.data.few_shot_prompt([("2+2", "4"), ("3+3", "6")], "4+4")
    assert prompt == "Input: 2+2\nOutput: 4\n\nInput: 3+3\nOutput: 6\n\nInput: 4+4\nOutput:"


def test_custom_template_separator_instruction_and_dicts():
    prompt = kerasllm.data.few_shot_prompt(
        [{"input": "Hamlet", "output": "tragedy", "act": 1}],
        {"input": "Macbeth", "act": 2},
        template="Play ({act}): {input} -> {output}",
        separator="\n",
        instruction="Name the genre.",
    )
    assert prompt == "Name the genre.\nPlay (1): Hamlet -> tragedy\nPlay (2): Macbeth ->"


def test_zero_shot_and_ordering():
    assert kerasllm.data.few_shot_prompt([], "x", template="Q: {input} A: {output}") == "Q: x A:"
    examples = [("a", "1"), ("b", "2"), ("c", "3")]
    prompt = kerasllm.data.few_shot_prompt(examples, "d", template="{input}={output}", separator=";")
    assert prompt == "a=1;b=2;c=3;d="


def test_errors():
    with pytest.raises(ValueError, match=r"\{input\} and an \{output\}"):
        kerasllm.data.few_shot_prompt([], "x", template="Q: {question} A: {output}")
    with pytest.raises(ValueError, match="last field"):
        kerasllm.data.few_shot_prompt([], "x", template="{output} <- {input}")
    with pytest.raises(ValueError, match=r"examples\[1\]"):
        kerasllm.data.few_shot_prompt([("a", "1"), ("b",)], "x")
    with pytest.raises(ValueError, match="'input' and 'output'"):
        kerasllm.data.few_shot_prompt([{"input": "a"}], "x")
    with pytest.raises(ValueError, match="needs \\['act'\\]"):
        kerasllm.data.few_shot_prompt([("a", "1")], "x", template="{act} {input} {output}")
    with pytest.raises(ValueError, match="list of"):
        kerasllm.data.few_shot_prompt("a", "x")
