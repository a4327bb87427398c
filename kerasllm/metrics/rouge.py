"""ROUGE-N and ROUGE-L F-measures of generated text, computed on the host (no TensorFlow)."""

import collections
import re

import keras

from kerasllm.metrics.bleu import check_pairs

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


def tokenize_rouge(text):
    """Lower-cased runs of `[a-z0-9]`, as rouge-score's default tokenizer (without stemming) gives.

    Args:
        text: str.

    Returns:
        A list of str tokens (other characters, accented letters included, separate tokens and vanish).
    """
    return _NON_ALPHANUMERIC.sub(" ", text.lower()).split()


def _f_measure(overlap, prediction_count, target_count):
    precision = overlap / max(prediction_count, 1)
    recall = overlap / max(target_count, 1)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _ngram_counts(tokens, n):
    return collections.Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _rouge_n_pair(reference, hypothesis, n):
    target, prediction = _ngram_counts(tokenize_rouge(reference), n), _ngram_counts(tokenize_rouge(hypothesis), n)
    overlap = sum(min(count, prediction[ngram]) for ngram, count in target.items())
    return _f_measure(overlap, sum(prediction.values()), sum(target.values()))


def _lcs_length(a, b):
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _rouge_l_pair(reference, hypothesis):
    target, prediction = tokenize_rouge(reference), tokenize_rouge(hypothesis)
    if not target or not prediction:
        return 0.0
    return _f_measure(_lcs_length(target, prediction), len(prediction), len(target))


def _pair_scores(references, hypotheses, order):
    references, hypotheses = check_pairs(references, hypotheses)
    scores = []
    for group, hypothesis in zip(references, hypotheses):
        # Several references: the best one counts (rouge-score's `score_multi`).
        if order == "l":
            scores.append(max(_rouge_l_pair(r, hypothesis) for r in group))
        else:
            scores.append(max(_rouge_n_pair(r, hypothesis, order) for r in group))
    return scores


def _check_order(order):
    if order == "l" or (not isinstance(order, bool) and isinstance(order, int) and order >= 1):
        return order
    raise ValueError(f"`order` must be a positive int (ROUGE-N) or 'l' (ROUGE-L), but got {order!r}.")


def rouge_n(references, hypotheses, n=2):
    """Mean ROUGE-N F-measure over pairs, equal to rouge-score's `rougeN` fmeasure.

    Text is lower-cased and split into runs of `[a-z0-9]` (rouge-score's tokenizer, without stemming);
    clipped n-gram overlap gives precision and recall of each pair; the result is the mean over pairs of
    their F-measure. With several references for one hypothesis, the best one counts.

    Args:
        references: list. One entry per hypothesis: a reference string or a list of them.
        hypotheses: list of str. The generated texts.
        n: int. The n-gram order. Defaults to `2`.

    Returns:
        A float in `[0, 1]`.

    Example:

    >>> kerasllm.metrics.rouge_n(["the cat sat on the mat"], ["the cat sat on a mat"], n=1)
    0.8333333333333334

    References:
        - [Lin, 2004, ROUGE](https://aclanthology.org/W04-1013/)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be a positive int, but got {n!r}.")
    scores = _pair_scores(references, hypotheses, n)
    return sum(scores) / len(scores) if scores else 0.0


def rouge_l(references, hypotheses):
    """Mean ROUGE-L F-measure over pairs (longest common subsequence), equal to rouge-score's `rougeL`.

    Args:
        references: list. One entry per hypothesis: a reference string or a list of them.
        hypotheses: list of str. The generated texts.

    Returns:
        A float in `[0, 1]`.

    Example:

    >>> kerasllm.metrics.rouge_l(["the cat sat on the mat"], ["the cat sat on a mat"])
    0.8333333333333334

    References:
        - [Lin, 2004, ROUGE](https://aclanthology.org/W04-1013/)
    """
    scores = _pair_scores(references, hypotheses, "l")
    return sum(scores) / len(scores) if scores else 0.0


@keras.saving.register_keras_serializable(package="kerasllm")
class ROUGE(keras.metrics.Metric):
    """Mean ROUGE-N or ROUGE-L F-measure as a Keras metric that accumulates strings on the host.

    `update_state(references, hypotheses)` scores each pair and `result()` gives the mean over every pair
    seen since the last `reset_state()` (weighted by `sample_weight` when given). It has no variables
    and runs outside the compiled step: call it on decoded generations.

    Args:
        order: int or `"l"`. The n-gram order of ROUGE-N, or `"l"` for ROUGE-L. Defaults to `"l"`.
        name: str. Defaults to `"rouge_l"` or `"rouge_<order>"`.
        dtype: dtype of the result. Defaults to `None`.

    Example:

    >>> metric = kerasllm.metrics.ROUGE(order=1)
    >>> metric.update_state(["the cat sat on the mat"], ["the cat sat on a mat"])
    >>> float(metric.result())
    0.8333333333333334
    """

    def __init__(self, order="l", name=None, dtype=None):
        order = _check_order(order)
        super().__init__(name=name or f"rouge_{order}", dtype=dtype)
        self.order = order
        self.reset_state()

    def update_state(self, references, hypotheses, sample_weight=None):
        scores = _pair_scores(references, hypotheses, self.order)
        weights = [1.0] * len(scores) if sample_weight is None else [float(w) for w in sample_weight]
        if len(weights) != len(scores):
            raise ValueError(f"Got {len(weights)} sample weights for {len(scores)} pairs; give one per pair.")
        self._total += sum(s * w for s, w in zip(scores, weights))
        self._count += sum(weights)

    def result(self):
        return self._total / self._count if self._count else 0.0

    def reset_state(self):
        self._total = self._count = 0.0

    def get_config(self):
        config = super().get_config()
        config["order"] = self.order
        return config
