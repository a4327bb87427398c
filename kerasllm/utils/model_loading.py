"""`load_model`: `keras.saving.load_model` in safe mode, with clear errors for missing or damaged files."""

import os
import zipfile

import keras


def load_model(path, safe_mode=True, **kwargs):
    """Loads a `.keras` file in Keras's safe mode, with an error naming the file if it is damaged.

    A truncated or corrupted file (e.g. from a copy or a save that was killed) raises a `ValueError`
    that names the file, instead of a `zipfile`/`h5py` error from deep inside Keras. Safe mode refuses
    to deserialize Python code (`lambda`s) stored in the file.

    Args:
        path: str. A `.keras` file.
        safe_mode: bool. Keras's `safe_mode`. Defaults to `True`.
        **kwargs: other `keras.saving.load_model` arguments (`custom_objects`, `compile`).

    Returns:
        The `keras.Model`.

    Example:

    >>> model.save("model.keras")
    >>> model = kerasllm.utils.load_model("model.keras")
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"No model file at {path!r}. Pass the path of a `.keras` file saved by `model.save()`.")
    damaged = (
        f"The model file {path!r} is damaged (truncated or corrupted) and cannot be loaded. Save the model "
        "again, or load an earlier copy (e.g. a `kerasllm.callbacks.Checkpoint` folder)."
    )
    if path.endswith(".keras"):
        if not zipfile.is_zipfile(path):
            raise ValueError(damaged)
        try:
            with zipfile.ZipFile(path) as archive:
                bad_member = archive.testzip()  # reads every member and checks its CRC
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise ValueError(f"{damaged} ({error})") from error
        if bad_member is not None:
            raise ValueError(f"{damaged} (member {bad_member!r} fails its checksum)")
    try:
        return keras.saving.load_model(path, safe_mode=safe_mode, **kwargs)
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as error:
        raise ValueError(f"{damaged} ({type(error).__name__}: {error})") from error
