"""`SearchSpace`: which training and model settings a hyperparameter search varies, and over what."""

import dataclasses
import math
import numbers

# Entries that take real values: a 2-tuple is a (min, max) range, a list a set of choices.
FLOAT_ENTRIES = ("learning_rate", "weight_decay")
# Entries that take whole numbers: a tuple or list is a set of choices.
INT_ENTRIES = ("warmup_steps", "batch_size", "hidden_dim", "intermediate_dim", "num_layers")
# The smallest value each entry accepts.
_MINIMUM = {"warmup_steps": 0, "batch_size": 1, "hidden_dim": 1, "intermediate_dim": 1, "num_layers": 1}
# Ranges sampled on a log scale (a learning rate spans orders of magnitude).
LOG_ENTRIES = ("learning_rate",)


@dataclasses.dataclass
class SearchSpace:
    """The settings a hyperparameter search varies: learning rate, warmup, batch size and model width.

    Each entry is `None` (not searched: the value of the base model config or the training defaults
    is used), a single value (fixed, and recorded with every trial), or several values. Whole-number
    entries (`warmup_steps`, `batch_size`, `hidden_dim`, `intermediate_dim`, `num_layers`) take a tuple
    or list of choices. Real-valued entries (`learning_rate`, `weight_decay`) take a `(min, max)` tuple
    for a continuous range (the learning rate sampled log-uniformly, weight decay uniformly) or a list
    of choices. When `hidden_dim` is searched and `intermediate_dim` is `None`, the feed-forward width
    follows as `4 * hidden_dim`.

    Args:
        learning_rate: tuple, list, float or None. Peak AdamW learning rate. Defaults to
            `(1e-4, 3e-3)`.
        warmup_steps: tuple, list, int or None. Linear warmup steps before the cosine decay. Defaults
            to `(0, 20, 50)`.
        batch_size: tuple, list, int or None. Sequences per optimizer step. Defaults to `(8, 16, 32)`.
        hidden_dim: tuple, list, int or None. Model width; must be divisible by the model's
            `num_heads`. Defaults to `None` (the base config's).
        intermediate_dim: tuple, list, int or None. Feed-forward width. Defaults to `None`
            (`4 * hidden_dim` when `hidden_dim` is searched, else the base config's).
        num_layers: tuple, list, int or None. Number of decoder blocks. Defaults to `None`.
        weight_decay: tuple, list, float or None. AdamW decoupled weight decay. Defaults to `None`.

    Example:

    >>> space = kerasllm.tuning.SearchSpace(learning_rate=(3e-4, 3e-3), batch_size=(8, 16),
    ...                                     warmup_steps=None, hidden_dim=(64, 128))
    >>> space.searched()
    ['learning_rate', 'batch_size', 'hidden_dim']
    """

    learning_rate: object = (1e-4, 3e-3)
    warmup_steps: object = (0, 20, 50)
    batch_size: object = (8, 16, 32)
    hidden_dim: object = None
    intermediate_dim: object = None
    num_layers: object = None
    weight_decay: object = None

    def __post_init__(self):
        for name in FLOAT_ENTRIES:
            setattr(self, name, _check_float_entry(name, getattr(self, name)))
        for name in INT_ENTRIES:
            setattr(self, name, _check_int_entry(name, getattr(self, name)))
        if not self.searched():
            raise ValueError(
                "The search space is empty: every entry is None or a single value, so there is nothing to "
                "search. Give at least one entry several values, e.g. "
                "`kerasllm.tuning.SearchSpace(learning_rate=(1e-4, 3e-3))` or `batch_size=(8, 16)`."
            )

    def entries(self):
        """Every entry that is not `None`, as `{name: value}` in a fixed order."""
        return {name: getattr(self, name) for name in ENTRY_NAMES if getattr(self, name) is not None}

    def searched(self):
        """The names of the entries with more than one possible value."""
        return [name for name, value in self.entries().items() if _is_range(value) or
                (isinstance(value, list) and len(value) > 1)]

    def values(self, name):
        """The discrete values of an entry (its choices, or its one fixed value); `None` for a range."""
        value = getattr(self, name)
        if value is None or _is_range(value):
            return None
        return list(value) if isinstance(value, list) else [value]

    def check_model(self, model_config, total_steps):
        """Raises a `ValueError` if a value of this space cannot work with a model config or step budget.

        Args:
            model_config: dict. The `kerasllm.models.CausalLM` arguments the trials start from.
            total_steps: int. The most optimizer steps one trial trains.
        """
        num_heads = model_config.get("num_heads")
        if self.hidden_dim is not None and num_heads and not model_config.get("head_dim"):
            bad = [width for width in self.values("hidden_dim") if width % num_heads]
            if bad:
                raise ValueError(
                    f"`hidden_dim` values {bad} are not divisible by the model's num_heads={num_heads}, so "
                    f"the heads cannot split the width. Use multiples of {num_heads} (e.g. "
                    f"{[num_heads * max(1, round(w / num_heads)) for w in bad]})."
                )
            if model_config.get("position_embedding") == "rotary":
                odd = [width for width in self.values("hidden_dim") if (width // num_heads) % 2]
                if odd:
                    raise ValueError(
                        f"`hidden_dim` values {odd} give an odd head width with num_heads={num_heads}, and "
                        f"rotary embeddings rotate pairs of channels. Use multiples of {2 * num_heads}."
                    )
        if self.warmup_steps is not None:
            too_long = [steps for steps in self.values("warmup_steps") if steps >= total_steps]
            if too_long:
                raise ValueError(
                    f"`warmup_steps` values {too_long} are not shorter than a trial's {total_steps} "
                    "training steps, which leaves no step for the cosine decay. Use fewer warmup steps or "
                    "more `steps`."
                )


ENTRY_NAMES = tuple(field.name for field in dataclasses.fields(SearchSpace))


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_range(value):
    return isinstance(value, tuple)


def _check_float_entry(name, value):
    if value is None:
        return None
    if isinstance(value, tuple):
        if len(value) != 2 or not all(_is_number(v) and math.isfinite(v) for v in value):
            raise ValueError(
                f"`{name}` as a tuple must be a (min, max) range of two numbers, but got {value!r}. Pass "
                f"a list for a set of choices, e.g. {name}=[1e-3, 3e-3]."
            )
        low, high = float(value[0]), float(value[1])
        _check_float_value(name, low)
        _check_float_value(name, high)
        if not low < high:
            raise ValueError(
                f"`{name}` range {value!r} must have min < max. Swap the bounds, or pass one number to "
                "fix the value."
            )
        return (low, high)
    choices = _choices(name, value, _is_number, "numbers")
    for choice in choices if isinstance(choices, list) else [choices]:
        _check_float_value(name, choice)
    return [float(c) for c in choices] if isinstance(choices, list) else float(choices)


def _check_float_value(name, value):
    if not math.isfinite(value) or (name == "learning_rate" and value <= 0) or value < 0:
        bound = "> 0" if name == "learning_rate" else ">= 0"
        raise ValueError(f"`{name}` values must be finite and {bound}, but got {value!r}.")


def _check_int_entry(name, value):
    if value is None:
        return None
    is_int = lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)  # noqa: E731
    choices = _choices(name, value, is_int, "whole numbers")
    for choice in choices if isinstance(choices, list) else [choices]:
        if choice < _MINIMUM[name]:
            raise ValueError(
                f"`{name}` values must be integers >= {_MINIMUM[name]}, but got {choice!r}. Remove it "
                "from the choices."
            )
    return [int(c) for c in choices] if isinstance(choices, list) else int(choices)


def _choices(name, value, accepts, kind):
    """A single accepted value, or a de-duplicated list of them (from a tuple or list)."""
    if accepts(value):
        return value
    if isinstance(value, (tuple, list)):
        if not value:
            raise ValueError(
                f"`{name}` has no values. Give at least one, or None to keep the base config's value."
            )
        bad = [v for v in value if not accepts(v)]
        if bad:
            raise ValueError(f"`{name}` values must be {kind}, but got {bad!r} in {value!r}.")
        return list(dict.fromkeys(value))
    raise ValueError(
        f"`{name}` must be None, one value, or a tuple/list of values ({kind}), but got "
        f"{type(value).__name__} {value!r}."
    )
