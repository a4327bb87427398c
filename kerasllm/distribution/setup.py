"""One-call set-ups of `keras.distribution` for the common cases: data parallel and model parallel."""

import keras

from kerasllm.distribution.layout_map import DEFAULT_MAX_REPLICATED_SIZE
from kerasllm.distribution.layout_map import auto_layout_map
from kerasllm.distribution.layout_map import check_layout_map
from kerasllm.distribution.layout_map import get_layout_map

DEVICE_TYPES = ("cpu", "gpu", "tpu")


def _require_jax():
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(
            f"keras.distribution supports JAX only in Keras 3.15, and the backend is {backend!r}. Set "
            "KERAS_BACKEND=jax to use it. For data parallelism on TensorFlow use "
            "`kerasllm.distribution.mirrored_strategy()` (build and compile the model under its `scope()`); on "
            "torch use `kerasllm.distribution.torch_data_parallel(model)` in processes started by torchrun. "
            "Model parallelism is JAX-only."
        )


def _resolve_devices(devices):
    if devices is None:
        return keras.distribution.list_devices()
    if isinstance(devices, str):
        if devices.lower() not in DEVICE_TYPES:
            raise ValueError(
                f"Unknown device type {devices!r}; use one of {DEVICE_TYPES}, a list of devices such as "
                "['gpu:0', 'gpu:1'] (see `keras.distribution.list_devices()`), or None for all devices."
            )
        return keras.distribution.list_devices(devices.lower())
    devices = list(devices)
    for device in devices:
        kind = str(device).split(":")[0].lower()
        if kind not in DEVICE_TYPES:
            raise ValueError(
                f"Unknown device {device!r}: a device is written 'TYPE:INDEX' with TYPE one of {DEVICE_TYPES}, "
                f"e.g. 'gpu:0'. The available devices are {keras.distribution.list_devices()}."
            )
    if not devices:
        raise ValueError("devices is an empty list; pass None to use every device, or e.g. ['gpu:0', 'gpu:1'].")
    return devices


def data_parallel(devices=None, auto_shard_dataset=True, model=None):
    """Replicates the model on every device and splits each batch across them (JAX only).

    Sets `keras.distribution.DataParallel` as the global distribution: models built afterwards are
    replicated, and `fit` splits each batch along its first axis, so the batch size must be a multiple
    of the number of devices (see `check_batch_size`). A model that already exists (loaded from a
    `.keras` file, or compiled and trained) holds its weights on one device, which Keras cannot mix
    with replicated state in one step; pass it as `model` to replicate its weights in place (the
    optimizer's and metrics' state follow at the first step).

    Args:
        devices: None, a device type (`"cpu"`, `"gpu"`, `"tpu"`) or a list of devices such as
            `["gpu:0", "gpu:1"]`. Defaults to `None` (every device of the default type, on every host).
        auto_shard_dataset: bool. With several processes, let Keras split a `tf.data.Dataset` between
            them; set `False` when each process feeds its own shard. Defaults to `True`.
        model: a `keras.Model` created before this call, to replicate in place, or `None`. Defaults to
            `None`.

    Returns:
        The `keras.distribution.DataParallel` that was set.

    Example:

    >>> kerasllm.distribution.data_parallel()
    >>> model = kerasllm.models.CausalLM.from_preset("tiny", vocabulary_size=512)

    or, for a model that already exists:

    >>> model = keras.saving.load_model("runs/tiny/model.keras")
    >>> kerasllm.distribution.data_parallel(model=model)
    """
    _require_jax()
    distribution = keras.distribution.DataParallel(
        devices=_resolve_devices(devices), auto_shard_dataset=auto_shard_dataset
    )
    keras.distribution.set_distribution(distribution)
    if model is not None:
        _reshard(model, distribution)
    return distribution


def model_parallel(
    model=None,
    model_dim=None,
    devices=None,
    layout_map=None,
    auto_shard_dataset=True,
    max_replicated_size=DEFAULT_MAX_REPLICATED_SIZE,
):
    """Splits weights over `model_dim` devices and batches over the rest (JAX only).

    Builds a `("batch", "model")` device mesh of shape `(n_devices // model_dim, model_dim)`, a layout
    map (`model.get_layout_map` for a kerasllm model, else `kerasllm.distribution.auto_layout_map`, or
    the one given) and sets `keras.distribution.ModelParallel` as the global distribution. Models built
    after this call are created sharded. A `model` passed in, already built, is resharded in place (its
    variables move to their layouts), so it need not be rebuilt; a model too large for one device
    should instead be built after the call, with `layout_map` computed from a small copy of the same
    architecture (the rules are regexes on variable paths).

    Args:
        model: a built `keras.Model` to lay out and reshard, or `None` (then `layout_map` is required).
            Defaults to `None`.
        model_dim: int. Number of devices each weight is split over; must divide the device count.
            Defaults to `None` (every device: mesh `(1, n_devices)`).
        devices: None, a device type (`"cpu"`, `"gpu"`, `"tpu"`) or a list of devices. Defaults to
            `None` (every device of the default type).
        layout_map: `keras.distribution.LayoutMap` or None. Used as is if given, with its own device
            mesh (which needs a `"batch"` axis); `model_dim` and `devices` are then not used to build
            one. Defaults to `None`.
        auto_shard_dataset: bool. See `data_parallel`. Defaults to `True`.
        max_replicated_size: int. Passed to the layout-map builders. Defaults to `2**20`.

    Returns:
        The `keras.distribution.ModelParallel` that was set.

    Example:

    >>> model = kerasllm.models.CausalLM.from_preset("tiny", vocabulary_size=512)
    >>> kerasllm.distribution.model_parallel(model, model_dim=4)
    >>> model.compile(optimizer="adamw", loss=kerasllm.losses.CausalLMLoss())
    """
    _require_jax()
    if model is None and layout_map is None:
        raise ValueError(
            "model_parallel needs a `model` (to derive its layout map) or a `layout_map`. Pass the built model, "
            "e.g. `kerasllm.distribution.model_parallel(model, model_dim=4)`."
        )
    if layout_map is not None:
        # The layout map's mesh is the one used; `model_dim` and `devices` may only restate it.
        mesh = layout_map.device_mesh
        if mesh is None or "batch" not in mesh.axis_names:
            raise ValueError(
                "layout_map must carry a device mesh with a 'batch' axis, e.g. `keras.distribution.DeviceMesh("
                "(2, 4), ('batch', 'model'), keras.distribution.list_devices())`."
            )
        sizes = dict(zip(mesh.axis_names, mesh.shape))
        if model_dim is not None and sizes.get("model") != model_dim:
            raise ValueError(
                f"model_dim={model_dim} disagrees with the layout map's mesh {sizes}. Leave model_dim out when "
                "passing a layout_map, or build the layout map on a mesh with that model dimension."
            )
        if model is not None:
            check_layout_map(model, layout_map, max_replicated_size=max_replicated_size)
    else:
        devices = _resolve_devices(devices)
        n_devices = len(devices)
        model_dim = n_devices if model_dim is None else model_dim
        if isinstance(model_dim, bool) or not isinstance(model_dim, int) or model_dim < 1 or n_devices % model_dim:
            raise ValueError(
                f"model_dim must be a positive integer that divides the number of devices ({n_devices}), got "
                f"{model_dim!r}. Choose one of "
                f"{[d for d in range(1, n_devices + 1) if n_devices % d == 0]}."
            )
        mesh = keras.distribution.DeviceMesh(
            shape=(n_devices // model_dim, model_dim), axis_names=("batch", "model"), devices=devices
        )
        if hasattr(model, "get_layout_map"):
            layout_map = model.get_layout_map(mesh, max_replicated_size=max_replicated_size)
        elif _is_kerasllm(model):  # e.g. a SequenceClassifier: the rules cover its backbone and head
            layout_map = get_layout_map(model, mesh, max_replicated_size=max_replicated_size)
        else:
            layout_map = auto_layout_map(model, mesh, max_replicated_size=max_replicated_size)
    distribution = keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch", auto_shard_dataset=auto_shard_dataset
    )
    keras.distribution.set_distribution(distribution)
    if model is not None:
        _reshard(model, distribution)
    return distribution


def check_batch_size(batch_size, distribution=None):
    """Raises a `ValueError` if `batch_size` cannot be split over the data-parallel axis.

    Keras splits each batch along its first axis over the mesh's batch axis; a batch size that axis
    does not divide fails inside the compiled step with a backend error. Call this before `fit`.

    Args:
        batch_size: int. The global batch size (every process together).
        distribution: `keras.distribution.Distribution`, a `tf.distribute.Strategy` (e.g. from
            `kerasllm.distribution.mirrored_strategy()`), a `kerasllm.distribution.TorchDataParallel`, or
            None. Defaults to the global `keras.distribution` one.
    """
    distribution = distribution or keras.distribution.distribution()
    if distribution is None:
        return
    what = "the number of data-parallel replicas"
    if hasattr(distribution, "num_replicas_in_sync"):  # tf.distribute
        replicas = distribution.num_replicas_in_sync
    elif hasattr(distribution, "world_size"):  # TorchDataParallel
        replicas = distribution.world_size
    else:
        what = "the data-parallel dimension of the mesh"
        mesh = distribution.device_mesh
        replicas = mesh.shape[list(mesh.axis_names).index(distribution.batch_dim_name)]
    if batch_size % replicas:
        low = batch_size // replicas * replicas
        raise ValueError(
            f"batch_size {batch_size} is not divisible by {what} ({replicas}), "
            f"so batches cannot be split evenly. Use a multiple of {replicas}, e.g. {low or replicas} or "
            f"{low + replicas}."
        )


def _reshard(model, distribution):
    # Keras lays a variable out when it is created; one created before the distribution was set holds
    # its value on one device. Giving it its layout and re-assigning its value moves it (the JAX
    # variable's assign distributes the new value according to `_layout`).
    for variable in model.weights:
        variable._layout = None
        layout = distribution.get_variable_layout(variable)
        variable._layout = layout
        variable.assign(variable.value)


def _is_kerasllm(model):
    from kerasllm.models.transformer_backbone import TransformerBackbone

    return isinstance(model, TransformerBackbone) or isinstance(getattr(model, "backbone", None), TransformerBackbone)
