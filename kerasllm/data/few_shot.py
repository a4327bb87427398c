"""`few_shot_prompt`: a prompt of worked examples followed by a query, for in-context evaluation."""

import string

DEFAULT_TEMPLATE = "Input: {input}\nOutput: {output}"


def few_shot_prompt(examples, query, template=DEFAULT_TEMPLATE, separator="\n\n", instruction=None):
    """Builds a few-shot prompt: optional instruction, filled-in examples, then the query left open.

    Each example fills `template`; the query fills the part of the template before `{output}`, so
    the prompt ends where the model's answer should begin (e.g. `"Input: ...\\nOutput:"`; trailing
    spaces are removed, so a tokenizer does not see a lone space before the answer). Parts are joined
    with `separator`.

    Args:
        examples: list of `(input, output)` pairs or of dicts with `"input"` and `"output"` keys (other
            keys fill other template fields). May be empty (zero-shot).
        query: str or dict. The input to answer; a dict fills other template fields too.
        template: str. A `str.format` template with an `{input}` field and an `{output}` field that
            comes last. Defaults to `"Input: {input}\\nOutput: {output}"`.
        separator: str. Joins the instruction, the examples and the query. Defaults to `"\\n\\n"`.
        instruction: str. A task description put first. Defaults to `None` (none).

    Returns:
        The prompt, a str.

    Example:

    >>> kerasllm.data.few_shot_prompt(
    ...     [("Who wrote Hamlet?", "Shakespeare"), ("Who wrote Faust?", "Goethe")],
    ...     "Who wrote Tartuffe?", template="Q: {input}\\nA: {output}", separator="\\n")
    'Q: Who wrote Hamlet?\\nA: Shakespeare\\nQ: Who wrote Faust?\\nA: Goethe\\nQ: Who wrote Tartuffe?\\nA:'

    References:
        - [Brown et al., 2020, Language Models are Few-Shot Learners](https://arxiv.org/abs/2005.14165)
    """
    if not isinstance(template, str):
        raise ValueError(f"`template` must be a str, but got {type(template).__name__}.")
    fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    if "input" not in fields or "output" not in fields:
        raise ValueError(
            f"`template` must contain an {{input}} and an {{output}} field, but got {template!r}. For example "
            f"{DEFAULT_TEMPLATE!r}."
        )
    if fields.count("output") != 1 or fields[-1] != "output":
        raise ValueError(
            f"`template` must hold {{output}} once, as its last field (the query leaves it open), but got "
            f"{template!r}."
        )
    if not isinstance(separator, str):
        raise ValueError(f"`separator` must be a str, but got {type(separator).__name__}.")
    if isinstance(examples, (str, dict)) or not hasattr(examples, "__iter__"):
        raise ValueError(
            f"`examples` must be a list of (input, output) pairs or dicts, but got {type(examples).__name__}."
        )
    parts = [] if instruction is None else [str(instruction)]
    for i, example in enumerate(examples):
        parts.append(_format(template, _fields(example, i), fields))
    head = template[: template.rindex("{output}")]
    query_fields = dict(query) if isinstance(query, dict) else {"input": query}
    parts.append(_format(head, query_fields, [f for f in fields if f != "output"], what="query").rstrip(" \t"))
    return separator.join(parts)


def _fields(example, index):
    if isinstance(example, dict):
        if "input" not in example or "output" not in example:
            raise ValueError(f"examples[{index}] must have 'input' and 'output' keys, but has {sorted(example)}.")
        return example
    if isinstance(example, (list, tuple)) and len(example) == 2:
        return {"input": example[0], "output": example[1]}
    raise ValueError(f"examples[{index}] must be an (input, output) pair or a dict, but got {example!r}.")


def _format(template, values, fields, what="an example"):
    missing = sorted(set(fields) - set(values))
    if missing:
        raise ValueError(f"The template needs {missing} but {what} does not give them: {values!r}.")
    return template.format(**values)
