"""BLEU and ROUGE: hand-computed cases, and equality with sacrebleu / rouge-score where installed."""

import math

import numpy as np
import pytest

import kerasllm
from kerasllm.metrics.bleu import tokenize_13a
from kerasllm.metrics.rouge import tokenize_rouge

HYPOTHESES = [
    "The cat sat on a mat.",
    "There is a dog in the garden, barking loudly!",
    "To be, or not to be: that is the question.",
    "He paid $3.50 for 2-3 apples & pears.",
    "Completely unrelated words here",
    "Now is the winter of our discontent",
]
REFERENCES = [
    ["The cat sat on the mat.", "A cat was sitting on the mat."],
    ["A dog is barking in the garden.", "In the garden there is a dog that barks loudly!"],
    ["To be, or not to be, that is the question:", "Whether to be or not to be is the question."],
    ["He paid $3.50 for 2-3 apples and pears.", "He spent 3.50 dollars on some apples & pears."],
    ["Nothing in common with the hypothesis", "Again nothing shared"],
    ["Now is the winter of our discontent made glorious summer", "Now is the winter of discontent"],
]


def test_bleu_hand_computed():
    # 1- to 4-gram precisions 5/6, 3/5, 2/4, 1/3 and no brevity penalty.
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert kerasllm.metrics.bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(expected)
    # Brevity penalty exp(1 - 3/2) with perfect precisions.
    assert kerasllm.metrics.bleu(["the cat sat"], ["the cat"], max_order=2) == pytest.approx(math.exp(-0.5))
    # Clipped counts: "the" matches once.
    assert kerasllm.metrics.bleu(["the cat"], ["the the the"], max_order=1) == pytest.approx(1 / 3)
    # Counts are pooled over the corpus, not averaged per sentence: 3 of 4 unigrams match.
    assert kerasllm.metrics.bleu(["a b", "c d"], ["a b", "c x"], max_order=1) == pytest.approx(3 / 4)
    # A zero precision gives 0 without smoothing; "exp" smoothing halves 1/total at each zero order.
    assert kerasllm.metrics.bleu(["a b x d"], ["a b c d"]) == 0.0
    smoothed = (3 / 4 * 1 / 3 * 1 / (2 * 2) * 1 / (4 * 1)) ** 0.25
    assert kerasllm.metrics.bleu(["a b x d"], ["a b c d"], smooth=True) == pytest.approx(smoothed)
    # Several references: n-grams match against any; the closest reference length sets the penalty.
    assert kerasllm.metrics.bleu([["a b c d e f", "x y"]], ["a b"], max_order=1) == pytest.approx(1.0)
    assert kerasllm.metrics.bleu([["a b c", "a b c d e"]], ["a b c d"], max_order=1) == pytest.approx(1.0)


def test_13a_tokenizer_hand_computed():
    assert tokenize_13a("Hello, world!") == ["Hello", ",", "world", "!"]
    assert tokenize_13a("pi is 3.14, not 3") == ["pi", "is", "3.14", ",", "not", "3"]
    assert tokenize_13a("2-3 A&amp;B") == ["2", "-", "3", "A", "&", "B"]
    assert kerasllm.metrics.bleu(["a b ."], ["a b."], tokenizer="13a", max_order=3) == pytest.approx(1.0)
    # Three tokens hold no 4-gram: that precision is undefined and the score 0, as in sacrebleu.
    assert kerasllm.metrics.bleu(["a b ."], ["a b."]) == 0.0
    assert kerasllm.metrics.bleu(["a b ."], ["a b."], tokenizer="whitespace", max_order=1) < 1.0


def test_rouge_hand_computed():
    ref, hyp = ["the cat sat on the mat"], ["The cat sat on a mat!"]
    assert kerasllm.metrics.rouge_n(ref, hyp, n=1) == pytest.approx(5 / 6)
    assert kerasllm.metrics.rouge_n(ref, hyp, n=2) == pytest.approx(3 / 5)
    # LCS of "a b c d" and "a c b d" is 3 of 4 tokens; precision 3/5 and recall 3/4 for unequal lengths.
    assert kerasllm.metrics.rouge_l(["a b c d"], ["a c b d"]) == pytest.approx(0.75)
    p, r = 3 / 5, 3 / 4
    assert kerasllm.metrics.rouge_l(["a b c d"], ["a c b d e"]) == pytest.approx(2 * p * r / (p + r))
    # The mean over pairs, and the best of several references.
    assert kerasllm.metrics.rouge_l(["a b", "c d"], ["a b", "x y"]) == pytest.approx(0.5)
    assert kerasllm.metrics.rouge_n([["x y", "a b"]], ["a b"], n=1) == pytest.approx(1.0)
    assert kerasllm.metrics.rouge_l([""], ["a"]) == 0.0
    assert tokenize_rouge("Don't STOP-me, café") == ["don", "t", "stop", "me", "caf"]


def test_metrics_accumulate_batches():
    bleu = kerasllm.metrics.BLEU()
    bleu.update_state(REFERENCES[:3], HYPOTHESES[:3])
    bleu.update_state(np.array([r[0] for r in REFERENCES[3:]]), np.array(HYPOTHESES[3:]))
    expected = kerasllm.metrics.bleu(
        [r for r in REFERENCES[:3]] + [r[0] for r in REFERENCES[3:]], HYPOTHESES
    )
    assert bleu.result() == pytest.approx(expected)
    bleu.reset_state()
    assert bleu.result() == 0.0

    rouge = kerasllm.metrics.ROUGE(order=2)
    assert rouge.name == "rouge_2"
    rouge.update_state(REFERENCES[:2], HYPOTHESES[:2])
    rouge.update_state(REFERENCES[2:], HYPOTHESES[2:])
    assert rouge.result() == pytest.approx(kerasllm.metrics.rouge_n(REFERENCES, HYPOTHESES, n=2))
    rouge.reset_state()
    rouge.update_state(["a b", "c d"], ["a b", "x y"], sample_weight=[3.0, 1.0])
    assert rouge.result() == pytest.approx(0.75)


def test_metric_config_round_trip():
    for metric in (kerasllm.metrics.BLEU(max_order=2, smooth=True, tokenizer="whitespace"),
                   kerasllm.metrics.ROUGE(order=1)):
        config = metric.get_config()
        clone = type(metric).from_config(config)
        assert clone.get_config() == config


def test_errors():
    with pytest.raises(ValueError, match="one reference"):
        kerasllm.metrics.bleu(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="single string"):
        kerasllm.metrics.bleu("a b", "a b")
    with pytest.raises(ValueError, match="tokenizer"):
        kerasllm.metrics.bleu(["a"], ["a"], tokenizer="intl")
    with pytest.raises(ValueError, match="max_order"):
        kerasllm.metrics.bleu(["a"], ["a"], max_order=0)
    with pytest.raises(ValueError, match="order"):
        kerasllm.metrics.ROUGE(order=0)
    with pytest.raises(ValueError, match="strings"):
        kerasllm.metrics.rouge_l([1], ["a"])


@pytest.mark.parametrize("max_order", [4, 2])
@pytest.mark.parametrize("smooth", [False, True])
def test_bleu_equals_sacrebleu(max_order, smooth):
    sacrebleu = pytest.importorskip("sacrebleu")
    from sacrebleu.metrics import BLEU

    scorer = BLEU(max_ngram_order=max_order, smooth_method="exp" if smooth else "none", tokenize="13a")
    streams = [[r[0] for r in REFERENCES], [r[1] for r in REFERENCES]]
    expected = scorer.corpus_score(HYPOTHESES, streams).score / 100
    ours = kerasllm.metrics.bleu(REFERENCES, HYPOTHESES, max_order=max_order, smooth=smooth)
    assert ours == pytest.approx(expected, abs=1e-12)
    assert 0 < ours < 1
    single = sacrebleu.corpus_bleu(HYPOTHESES, streams[:1], smooth_method="exp" if smooth else "none").score / 100
    if max_order == 4:
        assert kerasllm.metrics.bleu([r[0] for r in REFERENCES], HYPOTHESES, smooth=smooth) == pytest.approx(single)
    plain = BLEU(max_ngram_order=max_order, smooth_method="exp" if smooth else "none", tokenize="none")
    ours = kerasllm.metrics.bleu(REFERENCES, HYPOTHESES, max_order=max_order, smooth=smooth, tokenizer="whitespace")
    assert ours == pytest.approx(plain.corpus_score(HYPOTHESES, streams).score / 100, abs=1e-12)
    for line in HYPOTHESES + streams[0] + streams[1]:
        assert tokenize_13a(line) == sacrebleu.tokenizers.tokenizer_13a.Tokenizer13a()(line).split()


def test_rouge_equals_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    singles = [r[0] for r in REFERENCES] + ["Ça va? Très bien, merci."]
    hypotheses = HYPOTHESES + ["ca va tres bien merci"]
    scores = [scorer.score(r, h) for r, h in zip(singles, hypotheses)]
    for key, ours in (("rouge1", kerasllm.metrics.rouge_n(singles, hypotheses, n=1)),
                      ("rouge2", kerasllm.metrics.rouge_n(singles, hypotheses, n=2)),
                      ("rougeL", kerasllm.metrics.rouge_l(singles, hypotheses))):
        assert ours == pytest.approx(np.mean([s[key].fmeasure for s in scores]), abs=1e-12)
    # Several references: the best F-measure, as `score_multi` picks it.
    multi = [scorer.score_multi(r, h)["rougeL"].fmeasure for r, h in zip(REFERENCES, HYPOTHESES)]
    assert kerasllm.metrics.rouge_l(REFERENCES, HYPOTHESES) == pytest.approx(np.mean(multi), abs=1e-12)
