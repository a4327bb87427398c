"""BLEU: corpus-level n-gram precision of generated text, computed on the host (no TensorFlow)."""

import collections
import math
import re

import keras

# sacrebleu's `TokenizerRegexp`, applied after the 13a clean-up (mteval-v13a, as used by WMT).
_13A_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period and comma unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash when preceded by a digit
]


def tokenize_13a(line):
    """Splits a line into tokens exactly as sacrebleu's default `"13a"` tokenizer does.

    Args:
        line: str. The text.

    Returns:
        A list of str tokens.
    """
    line = line.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def _tokenizer(name):
    if name == "13a":
        return tokenize_13a
    if name == "whitespace":
        return lambda line: line.split()
    raise ValueError(f"`tokenizer` must be '13a' (sacrebleu's default) or 'whitespace', but got {name!r}.")


def _ngrams(tokens, max_order):
    counts = collections.Counter()
    for n in range(1, max_order + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i : i + n])] += 1
    return counts


def _closest_length(hypothesis_length, reference_lengths):
    # The closest reference length; on a tie the shorter one (sacrebleu and mteval-v13a).
    return min(reference_lengths, key=lambda length: (abs(hypothesis_length - length), length))


def check_pairs(references, hypotheses):
    """Validates and normalizes `(references, hypotheses)`: a list of reference lists and a list of str."""
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise ValueError(
            "`references` and `hypotheses` must be lists with one entry per example, not a single string. "
            "Wrap one example in a list: bleu([reference], [hypothesis])."
        )
    hypotheses = [_text(h, "hypotheses") for h in hypotheses]
    references = [_reference_group(r) for r in references]
    if len(references) != len(hypotheses):
        raise ValueError(
            f"Got {len(references)} references for {len(hypotheses)} hypotheses; give one reference (or a list "
            "of references) per hypothesis."
        )
    if any(not r for r in references):
        raise ValueError("Every hypothesis needs at least one reference; an empty reference list was given.")
    return references, hypotheses


def _reference_group(value):
    if isinstance(value, (list, tuple)) or (hasattr(value, "ndim") and getattr(value, "ndim") == 1):
        return [_text(x, "references") for x in value]
    return [_text(value, "references")]


def _text(value, name):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return _text(value.item(), name)
    if not isinstance(value, str):
        raise ValueError(f"`{name}` must hold strings, but got {type(value).__name__}: {value!r}.")
    return value


def bleu_statistics(references, hypotheses, max_order=4, tokenizer="13a"):
    """Sufficient statistics of corpus BLEU: matched and total n-gram counts and the two lengths.

    Returns:
        A tuple `(matches, totals, hypothesis_length, reference_length)`; `matches` and `totals` are lists
        of `max_order` ints.
    """
    references, hypotheses = check_pairs(references, hypotheses)
    tokenize = _tokenizer(tokenizer)
    matches, totals = [0] * max_order, [0] * max_order
    hypothesis_length = reference_length = 0
    for reference_group, hypothesis in zip(references, hypotheses):
        tokens = tokenize(hypothesis)
        reference_counts = collections.Counter()
        reference_lengths = []
        for reference in reference_group:
            reference_tokens = tokenize(reference)
            reference_lengths.append(len(reference_tokens))
            # An n-gram may match as often as it occurs in the reference that has it most.
            reference_counts |= _ngrams(reference_tokens, max_order)
        hypothesis_length += len(tokens)
        reference_length += _closest_length(len(tokens), reference_lengths)
        for ngram, count in _ngrams(tokens, max_order).items():
            totals[len(ngram) - 1] += count
            matches[len(ngram) - 1] += min(count, reference_counts.get(ngram, 0))
    return matches, totals, hypothesis_length, reference_length


def bleu_from_statistics(matches, totals, hypothesis_length, reference_length, smooth=False):
    """Corpus BLEU in `[0, 1]` from `bleu_statistics`, as sacrebleu computes it (score / 100)."""
    max_order = len(matches)
    if hypothesis_length == 0 or not any(matches):
        return 0.0
    brevity = 1.0 if hypothesis_length >= reference_length else math.exp(1 - reference_length / hypothesis_length)
    precisions = [0.0] * max_order
    smoothing = 1.0
    for n in range(max_order):
        if totals[n] == 0:
            break  # no n-grams of this order at all: the precision stays 0 and the score is 0
        if matches[n] == 0:
            if smooth:  # sacrebleu's "exp" smoothing (mteval-v13a's NIST method)
                smoothing *= 2
                precisions[n] = 1.0 / (smoothing * totals[n])
        else:
            precisions[n] = matches[n] / totals[n]
    if min(precisions) == 0.0:
        return 0.0
    return brevity * math.exp(sum(math.log(p) for p in precisions) / max_order)


def bleu(references, hypotheses, max_order=4, smooth=False, tokenizer="13a"):
    """Corpus BLEU of generated text against references, in `[0, 1]`.

    Equals `sacrebleu.corpus_bleu(hypotheses, reference_streams, tokenize="13a",
    smooth_method="exp" if smooth else "none").score / 100` (with `max_ngram_order=max_order`): n-gram
    counts are summed over the whole corpus before the precisions are taken, the brevity penalty uses the
    reference length closest to each hypothesis, and text is tokenized with sacrebleu's default `"13a"`
    tokenizer (punctuation split off, case kept). Pure Python: neither sacrebleu nor TensorFlow is needed.

    Args:
        references: list. One entry per hypothesis: a reference string, or a list of reference strings.
        hypotheses: list of str. The generated texts.
        max_order: int. Longest n-gram counted. Defaults to `4`.
        smooth: bool. sacrebleu's `"exp"` smoothing of zero precisions (its default for
            `corpus_bleu`); without it, any n-gram order with no match gives a score of 0. Defaults to
            `False`.
        tokenizer: str. `"13a"` or `"whitespace"` (split on whitespace only). Defaults to `"13a"`.

    Returns:
        A float in `[0, 1]`.

    Example:

    >>> kerasllm.metrics.bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    0.537284965911771

    References:
        - [Papineni et al., 2002, BLEU](https://aclanthology.org/P02-1040/)
        - [Post, 2018, A Call for Clarity in Reporting BLEU Scores (sacrebleu)](https://arxiv.org/abs/1804.08771)
    """
    if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 1:
        raise ValueError(f"`max_order` must be a positive int, but got {max_order!r}.")
    statistics = bleu_statistics(references, hypotheses, max_order=max_order, tokenizer=tokenizer)
    return bleu_from_statistics(*statistics, smooth=bool(smooth))


@keras.saving.register_keras_serializable(package="kerasllm")
class BLEU(keras.metrics.Metric):
    """Corpus BLEU as a Keras metric that accumulates strings on the host.

    `update_state(references, hypotheses)` adds the corpus statistics of a batch of strings; `result()`
    gives `kerasllm.metrics.bleu` of everything seen since the last `reset_state()`. It has no variables
    and runs outside the compiled step (strings cannot enter it on JAX or torch): call it on decoded
    generations, e.g. in an evaluation loop.

    Args:
        max_order: int. Longest n-gram counted. Defaults to `4`.
        smooth: bool. sacrebleu's `"exp"` smoothing. Defaults to `False`.
        tokenizer: str. `"13a"` or `"whitespace"`. Defaults to `"13a"`.
        name: str. Defaults to `"bleu"`.
        dtype: dtype of the result. Defaults to `None`.

    Example:

    >>> metric = kerasllm.metrics.BLEU()
    >>> metric.update_state(["the cat sat on the mat"], ["the cat sat on a mat"])
    >>> float(metric.result())
    0.537284965911771
    """

    def __init__(self, max_order=4, smooth=False, tokenizer="13a", name="bleu", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 1:
            raise ValueError(f"`max_order` must be a positive int, but got {max_order!r}.")
        _tokenizer(tokenizer)
        self.max_order = max_order
        self.smooth = bool(smooth)
        self.tokenizer = tokenizer
        self.reset_state()

    def update_state(self, references, hypotheses, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("BLEU is a corpus statistic and takes no `sample_weight`; leave it None.")
        matches, totals, hypothesis_length, reference_length = bleu_statistics(
            references, hypotheses, self.max_order, self.tokenizer
        )
        self._matches = [a + b for a, b in zip(self._matches, matches)]
        self._totals = [a + b for a, b in zip(self._totals, totals)]
        self._hypothesis_length += hypothesis_length
        self._reference_length += reference_length

    def result(self):
        return bleu_from_statistics(
            self._matches, self._totals, self._hypothesis_length, self._reference_length, smooth=self.smooth
        )

    def reset_state(self):
        self._matches, self._totals = [0] * self.max_order, [0] * self.max_order
        self._hypothesis_length = self._reference_length = 0

    def get_config(self):
        config = super().get_config()
        config.update({"max_order": self.max_order, "smooth": self.smooth, "tokenizer": self.tokenizer})
        return config
