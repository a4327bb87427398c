"""Renders a Hugging Face chat template (Jinja) into the text a chat model was trained on."""

import dataclasses
import functools
import json
from datetime import datetime

# Names a message's reasoning is passed under; templates read the first, some (gpt-oss) the second.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def render_chat_template(template, messages, add_generation_prompt=False, tools=None, documents=None,
                         **variables):
    """Renders a chat template the way `transformers`' `apply_chat_template` does.

    The template runs in Jinja's immutable sandbox with `trim_blocks` and `lstrip_blocks`, the
    `loopcontrols` extension, a `tojson` filter that does not escape HTML, the helpers `raise_exception`
    and `strftime_now`, and a `{% generation %}` tag that renders its body. Messages are copied to plain
    JSON data first, keys whose value is `None` are dropped, and a reasoning field is also offered under
    `reasoning_content` and `thinking`, as in `transformers`.

    Args:
        template: str. The Jinja template.
        messages: list of dict. The conversation, e.g. `[{"role": "user", "content": "Hi"}]`.
        add_generation_prompt: bool. Whether to end with the header of a new assistant turn. Defaults to
            `False`.
        tools: list of dict. JSON schemas of the tools the model may call. Defaults to `None`.
        documents: list of dict. Documents for retrieval-augmented templates. Defaults to `None`.
        **variables: more template variables, e.g. `bos_token="<s>"` or `enable_thinking=False`.

    Returns:
        The rendered text.
    """
    if isinstance(messages, dict) or not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(
            "`messages` must be a non-empty list of dicts such as `[{\"role\": \"user\", \"content\": \"Hi\"}]`, "
            f"but got {messages!r:.200}."
        )
    chat = []
    for message in messages:
        if not isinstance(message, dict):
            raise ValueError(f"Every message must be a dict with 'role' and 'content', but got {message!r:.200}.")
        message = _plain({key: value for key, value in message.items() if value is not None})
        reasoning = next((message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        chat.append(message)
    for tool in tools or ():
        if not isinstance(tool, dict):
            raise ValueError(
                f"Every tool must be a JSON schema (a dict), but got a {type(tool).__name__}. Describe functions "
                "as schemas, e.g. with `transformers.utils.get_json_schema(function)`."
            )
    return _compile(template).render(
        messages=chat, tools=_plain(tools), documents=_plain(documents),
        add_generation_prompt=add_generation_prompt, **_plain(variables),
    )


def _plain(value):
    """Rebuilds template data from plain JSON types, so the sandbox never sees methods of rich objects."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return _plain(value.item())  # NumPy scalars
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    return f"<{type(value).__name__}>"


@functools.lru_cache(maxsize=16)
def _compile(template):
    try:
        import jinja2
        from jinja2 import nodes
        from jinja2.ext import Extension, loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as error:
        raise ImportError(
            "Chat templates need Jinja2, which is not installed. Install it with `pip install jinja2`."
        ) from error

    class GenerationTag(Extension):
        # `{% generation %}...{% endgeneration %}` marks assistant text for training masks in transformers;
        # rendering only needs the body.
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own `tojson` escapes <, >, & and ', which would change the text the model sees.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[GenerationTag, loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = strftime_now
    return environment.from_string(template)
