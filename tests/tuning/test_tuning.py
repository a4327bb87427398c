"""`kerasllm.tuning`: the search space, the hypermodel and tiny random / Bayesian / Hyperband searches."""

import importlib.util
import math
import pathlib
import sys

import keras
import numpy as np
import pytest
from keras import ops

import kerasllm
from kerasllm.tuning import SearchSpace

keras_tuner = pytest.importorskip("keras_tuner")
# KerasTuner's own code calls threading.currentThread().
pytestmark = [
    pytest.mark.filterwarnings("ignore:currentThread:DeprecationWarning", "ignore:getName:DeprecationWarning"),
    pytest.mark.xdist_group("test_tuning"),  # one worker builds the module fixtures once (tests/run.sh)
]

BASE = dict(vocabulary_size=61, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16)
# Trials of 2-3 steps: compiling a step would cost more than running it.
FAST = dict(base_config=BASE, seed=0, run_eagerly=True)


def datasets():
    ids = np.random.default_rng(0).integers(0, 61, 1240)
    train = kerasllm.data.LanguageModelingDataset(ids[:1000], 16, 4, vocabulary_size=61)  # 58 windows
    validation = kerasllm.data.LanguageModelingDataset(ids[1000:], 16, 4, shuffle=False, vocabulary_size=61)
    return train, validation


BATCH_SPACE = SearchSpace(learning_rate=None, warmup_steps=None, batch_size=(2, 4))
RANDOM_SPACE = SearchSpace(learning_rate=(1e-3, 1e-2), warmup_steps=(0, 1), batch_size=(2, 4))


@pytest.fixture(scope="module")
def random_result():
    train, validation = datasets()
    return kerasllm.tuning.search(train, validation, RANDOM_SPACE, max_trials=2, steps=3, **FAST)


def hypermodel_and_hp(space, steps=3):
    hypermodel = kerasllm.tuning.CausalLMHyperModel(BASE, space, steps=steps, seed=0, run_eagerly=True)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    return hypermodel, hp


def test_random_search_reports_the_best_trial_and_stays_in_the_space(random_result):
    trials = random_result["trials"]
    assert len(trials) == 2 and all(t["status"] == "COMPLETED" for t in trials)
    losses = [t["val_loss"] for t in trials]
    assert random_result["best_val_loss"] == min(losses)
    best = trials[losses.index(min(losses))]
    assert random_result["best_trial_id"] == best["trial_id"]
    assert random_result["best_hyperparameters"] == best["hyperparameters"]
    assert random_result["best_perplexity"] == pytest.approx(math.exp(min(losses)), rel=1e-12)
    for trial in trials:
        values = trial["hyperparameters"]
        assert set(values) == {"learning_rate", "warmup_steps", "batch_size"}
        assert 1e-3 <= values["learning_rate"] <= 1e-2
        assert values["warmup_steps"] in (0, 1) and values["batch_size"] in (2, 4)
        assert trial["steps"] == 3 and trial["perplexity"] == pytest.approx(math.exp(trial["val_loss"]))
    assert trials[0]["hyperparameters"] != trials[1]["hyperparameters"]
    assert random_result["best_model_config"] == BASE
    assert random_result["best_training_config"]["batch_size"] == random_result["best_hyperparameters"]["batch_size"]


def test_best_trial_reproduces_its_validation_loss(random_result):
    # The reported loss belongs to the reported values: training them again gives the same loss.
    train, validation = datasets()
    hypermodel, hp = hypermodel_and_hp(RANDOM_SPACE)
    hp.values.update(random_result["best_hyperparameters"])
    model = hypermodel.build(hp)
    history = hypermodel.fit(hp, model, train, validation_data=validation)
    assert history.history["val_loss"][-1] == pytest.approx(random_result["best_val_loss"], rel=1e-4)
    # And validation scores every window of the held-out data, whatever the trial's batch size.
    expected = model.evaluate(validation, return_dict=True, verbose=0)["loss"]
    assert history.history["val_loss"][-1] == pytest.approx(expected, rel=1e-5)


def test_width_from_the_space_changes_the_built_model():
    space = SearchSpace(learning_rate=None, warmup_steps=None, batch_size=None, hidden_dim=(16, 32))
    hypermodel, hp = hypermodel_and_hp(space)
    for width in (16, 32):
        hp.values["hidden_dim"] = width
        model = hypermodel.build(hp)
        assert (model.hidden_dim, model.intermediate_dim) == (width, 4 * width)  # feed-forward follows 4x
        reference = kerasllm.models.CausalLM(**{**BASE, "hidden_dim": width, "intermediate_dim": 4 * width})
        assert model.count_params() == reference.count_params()


class CountExamples(keras.metrics.Metric):
    """Sums the batch sizes of the batches the model was trained on."""

    def __init__(self, name="examples"):
        super().__init__(name=name)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.total.assign(self.total + ops.cast(ops.shape(y_true)[0], "float32"))

    def result(self):
        return self.total * 1.0  # a copy: the logs keep it while validation updates the variable


def test_batch_size_from_the_space_changes_the_batches_the_model_sees():
    train, validation = datasets()
    hypermodel, hp = hypermodel_and_hp(BATCH_SPACE)
    for batch_size in (2, 4):
        hp.values["batch_size"] = batch_size
        model = hypermodel.build(hp)
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=[CountExamples()], run_eagerly=True,
                      jit_compile=False)
        history = hypermodel.fit(hp, model, train, validation_data=validation)
        assert history.history["examples"] == [3 * batch_size]  # 3 steps of `batch_size` sequences
        assert int(model.optimizer.iterations) == 3


def test_token_arrays_need_a_sequence_length_and_train_like_datasets():
    ids = np.random.default_rng(0).integers(0, 61, 1240)
    hypermodel = kerasllm.tuning.CausalLMHyperModel(BASE, BATCH_SPACE, steps=2,
                                                    sequence_length=16, run_eagerly=True)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    history = hypermodel.fit(hp, hypermodel.build(hp), ids[:1000], validation_data=ids[1000:])
    assert len(history.history["val_loss"]) == 1 and np.isfinite(history.history["val_loss"][0])
    unsized = kerasllm.tuning.CausalLMHyperModel(BASE, BATCH_SPACE, steps=2)
    with pytest.raises(ValueError, match="pass `sequence_length=`"):
        unsized.fit(hp, unsized.build(hp), ids[:1000], validation_data=ids[1000:])


STARTING_STEPS = []  # KerasTuner deep-copies callbacks per trial: they report here


class RecordStartingStep(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        STARTING_STEPS.append(int(self.model.optimizer.iterations))


def test_hyperband_continues_the_best_trials():
    train, validation = datasets()
    STARTING_STEPS.clear()
    result = kerasllm.tuning.search(
        train, validation, SearchSpace(learning_rate=(1e-3, 1e-2), warmup_steps=None, batch_size=(2, 4)),
        algorithm="hyperband", steps=2, hyperband_epochs=2, hyperband_factor=2, callbacks=[RecordStartingStep()],
        **FAST,
    )
    # The continued trial resumes its optimizer (and so its schedule) after its first step.
    assert STARTING_STEPS == [0, 0, 1, 0, 0]
    trials = result["trials"]
    # max_epochs 2, factor 2: two 1-step trials, the better one continued to 2 steps, two 2-step trials.
    assert [t["steps"] for t in trials] == [1, 1, 2, 2, 2]
    first_round = trials[:2]
    better = min(first_round, key=lambda t: t["val_loss"])
    assert trials[2]["hyperparameters"] == better["hyperparameters"]
    assert result["best_val_loss"] == min(t["val_loss"] for t in trials)


def test_bayesian_search_runs():
    pytest.importorskip("sklearn", reason="KerasTuner's BayesianOptimization needs scikit-learn")
    train, validation = datasets()
    result = kerasllm.tuning.search(
        train, validation, SearchSpace(learning_rate=(1e-3, 1e-2), warmup_steps=None, batch_size=None),
        algorithm="bayesian", max_trials=3, initial_points=2, steps=2, **FAST,
    )
    assert len(result["trials"]) == 3
    assert result["best_val_loss"] == min(t["val_loss"] for t in result["trials"])
    assert all(1e-3 <= t["hyperparameters"]["learning_rate"] <= 1e-2 for t in result["trials"])


def test_bayesian_without_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn` raise ImportError
    train, validation = datasets()
    with pytest.raises(ImportError, match=r'pip install "kerasllm\[tuning\]"'):
        kerasllm.tuning.search(train, validation, algorithm="bayesian", **FAST)


def test_missing_keras_tuner_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_tuner", None)
    train, validation = datasets()
    with pytest.raises(ImportError, match=r'pip install "kerasllm\[tuning\]"'):
        kerasllm.tuning.search(train, validation, **FAST)


def test_the_modules_import_needs_no_keras_tuner(monkeypatch):
    # `import kerasllm` imports kerasllm.tuning: running each module it loads with KerasTuner missing
    # shows none of them imports it; only the hypermodel's module needs it, and says how to install it.
    monkeypatch.setitem(sys.modules, "keras_tuner", None)
    package = pathlib.Path(kerasllm.tuning.__file__).parent

    def run_module(name):
        spec = importlib.util.spec_from_file_location(f"probe_{name}", package / f"{name}.py")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))

    for name in ("__init__", "hyperparameter_search", "search_space", "step_batches", "dependency"):
        run_module(name)
    with pytest.raises(ImportError, match=r'pip install "kerasllm\[tuning\]"'):
        run_module("causal_lm_hyper_model")


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="search space is empty"):
        SearchSpace(learning_rate=None, warmup_steps=None, batch_size=None)
    with pytest.raises(ValueError, match="search space is empty"):
        SearchSpace(learning_rate=1e-3, warmup_steps=[10], batch_size=16)
    with pytest.raises(ValueError, match="must be finite and > 0"):
        SearchSpace(learning_rate=(-1e-3, 1e-2))
    with pytest.raises(ValueError, match="min < max"):
        SearchSpace(learning_rate=(3e-3, 1e-4))
    with pytest.raises(ValueError, match=r"\(min, max\) range of two numbers"):
        SearchSpace(learning_rate=(1e-4, 1e-3, 1e-2))
    with pytest.raises(ValueError, match="integers >= 1"):
        SearchSpace(batch_size=(0, 8))
    with pytest.raises(ValueError, match="whole numbers"):
        SearchSpace(hidden_dim=(16.5, 32))
    with pytest.raises(ValueError, match="has no values"):
        SearchSpace(batch_size=())
    with pytest.raises(ValueError, match="not divisible by the model's num_heads=2"):
        kerasllm.tuning.CausalLMHyperModel(BASE, SearchSpace(hidden_dim=(15, 16)), steps=3)
    with pytest.raises(ValueError, match="no step for the cosine decay"):
        kerasllm.tuning.CausalLMHyperModel(BASE, SearchSpace(warmup_steps=(0, 3)), steps=3)
    with pytest.raises(ValueError, match="Unknown CausalLM preset 'huge'"):
        kerasllm.tuning.CausalLMHyperModel("huge", SearchSpace(), steps=100)
    train, validation = datasets()
    with pytest.raises(ValueError, match="Valid algorithms: 'random', 'bayesian', 'hyperband'"):
        kerasllm.tuning.search(train, validation, algorithm="grid", **FAST)
    with pytest.raises(ValueError, match="needs `validation_data`"):
        kerasllm.tuning.search(train, None, SearchSpace(learning_rate=(1e-3, 1e-2)), max_trials=1, steps=2, **FAST)
