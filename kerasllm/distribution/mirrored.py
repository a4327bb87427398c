"""Data parallelism on TensorFlow: a `tf.distribute.MirroredStrategy` over the visible devices."""

import keras

from kerasllm.utils import backend_distribution

_TYPES = ("cpu", "gpu")


def mirrored_strategy(devices=None):
    """Returns a `tf.distribute.MirroredStrategy` that replicates a model on every device (TensorFlow only).

    Build and compile the model under `strategy.scope()`; its variables are then mirrored on every device,
    and `model.fit` splits each global batch over the replicas and averages their gradients. Pass the
    global batch size to `fit`; it must be a multiple of the number of replicas
    (`kerasllm.distribution.check_batch_size(batch_size, strategy)` says so before training).

    XLA stays off under the strategy: Keras 3.15 compiles the whole replicated step as one XLA cluster,
    which cannot read variables placed on other devices. kerasllm models compiled in the scope do this
    themselves; for other Keras models pass `jit_compile=False`. On JAX use `kerasllm.distribution.data_parallel()`;
    on torch `kerasllm.distribution.torch_data_parallel(model)`.

    Args:
        devices: None, a device type (`"cpu"` or `"gpu"`) or a list of devices such as `["gpu:0", "gpu:1"]`.
            Defaults to `None` (every GPU, or every logical CPU device when there is no GPU).

    Returns:
        A `tf.distribute.MirroredStrategy` (its `reduce` keeps integer values integer, see
        `kerasllm/utils/backend_distribution.py`).

    Example:

    >>> strategy = kerasllm.distribution.mirrored_strategy()
    >>> with strategy.scope():
    ...     model = kerasllm.models.CausalLM.from_preset("tiny", vocabulary_size=512)
    ...     model.compile(optimizer="adamw", loss=kerasllm.losses.CausalLMLoss())
    >>> model.fit(x, y, batch_size=8 * strategy.num_replicas_in_sync)
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(
            f"mirrored_strategy needs the TensorFlow backend, and the backend is {backend!r}. Set "
            "KERAS_BACKEND=tensorflow, or use kerasllm.distribution.data_parallel() on JAX and "
            "kerasllm.distribution.torch_data_parallel(model) on torch."
        )
    return backend_distribution.tf_mirrored_strategy(_resolve_devices(devices))


def _resolve_devices(devices):
    available = {kind: backend_distribution.tf_logical_devices(kind) for kind in _TYPES}
    if devices is None:
        return available["gpu"] or available["cpu"]
    if isinstance(devices, str):
        kind = devices.lower()
        if kind == "tpu":
            raise ValueError(
                "MirroredStrategy does not drive TPUs; use tf.distribute.TPUStrategy directly, or the JAX backend "
                "with kerasllm.distribution.data_parallel('tpu')."
            )
        if kind not in _TYPES:
            raise ValueError(f"Unknown device type {devices!r}; use one of {_TYPES}, a list such as "
                             "['gpu:0', 'gpu:1'], or None for every GPU (else every CPU device).")
        if not available[kind]:
            raise ValueError(f"TensorFlow sees no {kind.upper()} device; the visible devices are {available}.")
        return available[kind]
    devices = list(devices)
    if not devices:
        raise ValueError("devices is an empty list; pass None to use every device, or e.g. ['gpu:0', 'gpu:1'].")
    names = []
    for device in devices:
        kind, _, index = str(device).lower().rpartition("/device:")[2].partition(":")
        name = f"/device:{kind.upper()}:{index}"
        if kind not in _TYPES or not index.isdigit() or name not in available.get(kind, ()):
            raise ValueError(
                f"Unknown device {device!r}: write a device 'TYPE:INDEX' with TYPE one of {_TYPES}, e.g. "
                f"'gpu:0'. TensorFlow's devices are {available['gpu'] + available['cpu']}."
            )
        names.append(name)
    if len(set(names)) != len(names):
        raise ValueError(f"devices lists a device twice: {devices}. Name each device once.")
    return names
