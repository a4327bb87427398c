"""KerasTuner (and, for Bayesian optimization, scikit-learn) are optional: imported only when a search runs."""

INSTALL_HINT = 'pip install "kerasllm[tuning]"'


def import_keras_tuner(algorithm=None):
    """Returns the `keras_tuner` module, or raises an `ImportError` that says how to install it.

    Args:
        algorithm: str. With `"bayesian"`, also checks for scikit-learn, whose Gaussian process
            KerasTuner's `BayesianOptimization` uses. Defaults to `None`.
    """
    try:
        import keras_tuner
    except ImportError as error:
        raise ImportError(
            f"kerasllm.tuning runs its searches with KerasTuner, which is not installed. Install it with "
            f"`{INSTALL_HINT}` (or `pip install keras-tuner`)."
        ) from error
    if algorithm == "bayesian":
        try:
            import sklearn  # noqa: F401
        except ImportError as error:
            raise ImportError(
                "algorithm='bayesian' needs scikit-learn (KerasTuner's BayesianOptimization fits its Gaussian "
                f"process with it), which is not installed. Install it with `{INSTALL_HINT}` (or "
                "`pip install scikit-learn`), or use algorithm='random' or 'hyperband'."
            ) from error
    return keras_tuner
