"""`search`: a hyperparameter search over a `CausalLM` and its training recipe, with KerasTuner."""

import math
import tempfile
import warnings

from kerasllm.tuning.dependency import import_keras_tuner
from kerasllm.tuning.search_space import SearchSpace
from kerasllm.tuning.step_batches import token_windows, validation_inputs

ALGORITHMS = ("random", "bayesian", "hyperband")


def search(
    train_data,
    validation_data,
    search_space=None,
    base_config="tiny",
    algorithm="random",
    max_trials=10,
    steps=100,
    directory=None,
    seed=0,
    sequence_length=None,
    learning_rate=2e-3,
    warmup_steps=None,
    batch_size=None,
    weight_decay=0.1,
    hyperband_epochs=3,
    hyperband_factor=3,
    initial_points=None,
    jit_compile="auto",
    run_eagerly=False,
    callbacks=None,
    verbose=0,
):
    """Searches learning rate, warmup, batch size and model width for the lowest validation loss.

    Each trial builds a fresh `kerasllm.models.CausalLM` from `base_config` with the trial's values
    (`kerasllm.tuning.CausalLMHyperModel`), trains it for `steps` optimizer steps with AdamW and a
    warmup + cosine schedule, and is scored by its validation loss. Every trial starts from the same
    seed, so trials differ only in the searched values. `"random"` is `keras_tuner.RandomSearch`,
    `"bayesian"` `keras_tuner.BayesianOptimization` (a Gaussian process proposes the next trial),
    `"hyperband"` `keras_tuner.Hyperband`: it trains many trials for `steps // hyperband_epochs` steps
    and continues the best ones up to `steps` (its number of trials follows from `hyperband_epochs`
    and `hyperband_factor`; `max_trials` does not apply).

    Needs KerasTuner, and for `"bayesian"` scikit-learn (`pip install "kerasllm[tuning]"`).

    Args:
        train_data: `kerasllm.data.LanguageModelingDataset` or 1-D array of token ids. Training text;
            each trial re-batches its windows to the trial's batch size.
        validation_data: `kerasllm.data.LanguageModelingDataset` or 1-D array of token ids. Held-out
            text; every trial is scored on all of it.
        search_space: `kerasllm.tuning.SearchSpace`. What to search. Defaults to `SearchSpace()`
            (learning rate, warmup steps and batch size).
        base_config: str or dict. The model the trials start from: a `CausalLM` preset name, or a dict
            of `CausalLM` arguments that may name a `"preset"` to override. Its `vocabulary_size`
            defaults to the training dataset's. Defaults to `"tiny"`.
        algorithm: str. `"random"`, `"bayesian"` or `"hyperband"`. Defaults to `"random"`.
        max_trials: int. Number of trials of random and Bayesian search. Defaults to `10`.
        steps: int. Optimizer steps per trial (the most a Hyperband trial trains). Defaults to `100`.
        directory: str. Folder for KerasTuner's trial records and checkpoints (overwritten). Defaults
            to `None` (a temporary folder, deleted afterwards).
        seed: int. Seed of the search, the initial weights and the data order. Defaults to `0`.
        sequence_length: int. Tokens per example for token-array data. Defaults to `None`.
        learning_rate: float. Learning rate when not searched. Defaults to `2e-3`.
        warmup_steps: int. Warmup steps when not searched. Defaults to `None` (5% of `steps`).
        batch_size: int. Batch size when not searched. Defaults to `None` (the training dataset's).
        weight_decay: float. Weight decay when not searched. Defaults to `0.1`.
        hyperband_epochs: int. Hyperband's `max_epochs`: the slices `steps` is cut into. Defaults to `3`.
        hyperband_factor: int. Hyperband's reduction factor. Defaults to `3`.
        initial_points: int. Bayesian optimization: random trials before the Gaussian process proposes
            trials. Defaults to `None` (KerasTuner's: 3 per searched entry).
        jit_compile: bool or `"auto"`. The trials' `model.compile(jit_compile=...)`. Defaults to `"auto"`.
        run_eagerly: bool. Train the trials without compiling a step (worth it for trials of a few
            steps of a small model). Defaults to `False`.
        callbacks: list of `keras.callbacks.Callback`. Passed to every trial's `fit`. Defaults to `None`.
        verbose: int. KerasTuner's and `fit`'s verbosity. Defaults to `0`.

    Returns:
        A dict: `best_hyperparameters` (the searched values of the best trial), `best_val_loss`,
        `best_perplexity` (`exp(best_val_loss)`), `best_trial_id`, `best_model_config` (its `CausalLM`
        arguments), `best_training_config` (learning rate, warmup, weight decay, batch size), `trials`
        (one dict per trial: `trial_id`, `status`, `hyperparameters`, `val_loss`, `perplexity`,
        `steps`), and `algorithm`, `steps`, `searched`.

    Example:

    >>> text = kerasllm.datasets.shakespeare()[:200_000]
    >>> tokenizer = kerasllm.tokenizers.CharacterTokenizer.train(text)
    >>> train, val = kerasllm.data.language_modeling_splits(text, tokenizer, sequence_length=64)
    >>> result = kerasllm.tuning.search(
    ...     train, val, kerasllm.tuning.SearchSpace(learning_rate=(3e-4, 3e-3), batch_size=(8, 16)),
    ...     base_config={"preset": "tiny", "num_layers": 2}, max_trials=4, steps=100)
    >>> result["best_hyperparameters"], result["best_perplexity"]

    References:
        - [Bergstra and Bengio, 2012, Random Search for Hyper-Parameter Optimization](https://jmlr.org/papers/v13/bergstra12a.html)
        - [Snoek et al., 2012, Practical Bayesian Optimization of Machine Learning Algorithms](https://arxiv.org/abs/1206.2944)
        - [Li et al., 2018, Hyperband](https://jmlr.org/papers/v18/16-558.html)
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"Unknown search algorithm {algorithm!r}. Valid algorithms: {', '.join(map(repr, ALGORITHMS))}."
        )
    for value, name in ((max_trials, "max_trials"), (hyperband_epochs, "hyperband_epochs")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, but got {value!r}.")
    if isinstance(hyperband_factor, bool) or not isinstance(hyperband_factor, int) or hyperband_factor < 2:
        raise ValueError(f"`hyperband_factor` must be an integer >= 2, but got {hyperband_factor!r}.")
    if search_space is None:
        search_space = SearchSpace()
    # Bad data fails here, not inside a trial (where KerasTuner would report it as a failed trial).
    token_windows(train_data, sequence_length)
    validation_inputs(validation_data, sequence_length)
    keras_tuner = import_keras_tuner(algorithm)
    from kerasllm.tuning.causal_lm_hyper_model import CausalLMHyperModel

    config = {"preset": base_config} if isinstance(base_config, str) else base_config
    if isinstance(config, dict) and getattr(train_data, "vocabulary_size", None) is not None:
        config = {"vocabulary_size": train_data.vocabulary_size, **config}
    hyperband = algorithm == "hyperband"
    hypermodel = CausalLMHyperModel(
        config, search_space, steps=steps, learning_rate=learning_rate, warmup_steps=warmup_steps,
        batch_size=batch_size, weight_decay=weight_decay, sequence_length=sequence_length,
        epochs=hyperband_epochs if hyperband else 1, seed=seed, jit_compile=jit_compile,
        run_eagerly=run_eagerly,
    )
    with tempfile.TemporaryDirectory(prefix="kerasllm-tuning-") as scratch:
        common = dict(
            objective="val_loss",
            seed=seed + 1,  # KerasTuner takes a seed of 0 as "no seed"
            directory=directory or scratch,
            project_name="kerasllm_tuning",
            overwrite=True,
            # A trial that raises is a bug or bad data, not a bad hyperparameter: stop at once.
            max_consecutive_failed_trials=1,
        )
        if algorithm == "random":
            tuner = keras_tuner.RandomSearch(hypermodel, max_trials=max_trials, **common)
        elif algorithm == "bayesian":
            tuner = keras_tuner.BayesianOptimization(
                hypermodel, max_trials=max_trials, num_initial_points=initial_points, **common
            )
        else:
            tuner = keras_tuner.Hyperband(
                hypermodel, max_epochs=hyperband_epochs, factor=hyperband_factor, **common
            )
        _skip_tensorboard_setup(tuner, callbacks)
        with warnings.catch_warnings():
            # Hyperband rebuilds a continued trial from its build config; a CausalLM builds itself in
            # `__init__`, so there is nothing to build and Keras's warning says nothing useful.
            warnings.filterwarnings("ignore", message=r"Model '.*' had a build config")
            tuner.search(train_data, validation_data=validation_data, callbacks=list(callbacks or []),
                         verbose=verbose)
        return _results(tuner, hypermodel, algorithm, search_space, getattr(train_data, "batch_size", None))


def _skip_tensorboard_setup(tuner, callbacks):
    """On the TensorFlow backend KerasTuner imports TensorBoard for every trial, even without a
    `TensorBoard` callback; tensorflow-cpu does not bring TensorBoard, so skip that step when there is
    nothing for it to configure."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None and not any(
        type(callback).__name__ == "TensorBoard" for callback in callbacks or []
    ):
        tuner._configure_tensorboard_dir = lambda callbacks, trial, execution=0: None


def _results(tuner, hypermodel, algorithm, search_space, data_batch_size):
    trials = []
    best = None
    for trial_id, trial in sorted(tuner.oracle.trials.items(), key=lambda item: (len(item[0]), item[0])):
        values = dict(trial.hyperparameters.values)
        epochs = values.get("tuner/epochs", 1)
        values = {name: value for name, value in values.items() if not name.startswith("tuner/")}
        score = None if trial.score is None else float(trial.score)
        record = {
            "trial_id": trial_id,
            "status": str(trial.status),
            "hyperparameters": values,
            "val_loss": score,
            "perplexity": None if score is None or not math.isfinite(score) else math.exp(score),
            "steps": epochs * hypermodel.steps_per_epoch,
        }
        trials.append(record)
        if score is not None and math.isfinite(score) and (best is None or score < best[0]["val_loss"]):
            best = record, trial
    if best is None:
        raise ValueError(
            f"No trial of the search finished with a finite validation loss ({len(trials)} trials). Lower the "
            "learning rates in the search space, or check the data."
        )
    record, trial = best
    return {
        "algorithm": algorithm,
        "steps": hypermodel.total_steps,
        "searched": search_space.searched(),
        "best_trial_id": record["trial_id"],
        "best_hyperparameters": record["hyperparameters"],
        "best_val_loss": record["val_loss"],
        "best_perplexity": record["perplexity"],
        "best_model_config": hypermodel.model_config(trial.hyperparameters),
        "best_training_config": _training_config(hypermodel, trial, data_batch_size),
        "trials": trials,
    }


def _training_config(hypermodel, trial, data_batch_size):
    config = hypermodel.training_config(trial.hyperparameters)
    if config["batch_size"] is None:
        config["batch_size"] = data_batch_size or 32  # what `CausalLMHyperModel.fit` trained with
    return config
