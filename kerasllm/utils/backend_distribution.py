"""The backend-specific pieces of data parallelism outside `keras.distribution`.

`keras.distribution` is complete on JAX only in Keras 3.15. On TensorFlow, Keras's trainer honours a
`tf.distribute` strategy (variables created under `strategy.scope()` are mirrored and `fit` runs each step
on every replica, `keras/src/backend/tensorflow/trainer.py`); on torch, Keras has no data parallelism inside
`fit`, so gradients are averaged across `torch.distributed` processes by autograd hooks on the parameters,
the mechanism `torch.nn.parallel.DistributedDataParallel` itself is built on. Only this module imports
tensorflow or torch; `kerasllm.distribution` validates arguments and calls it.
"""

import datetime

_STRATEGY_CLASS = None


def tf_logical_devices(device_type):
    """Names of TensorFlow's logical devices of `device_type` (`"CPU"` or `"GPU"`), e.g. `"/device:CPU:0"`."""
    import tensorflow as tf

    return [device.name for device in tf.config.list_logical_devices(device_type.upper())]


def tf_mirrored_strategy(devices):
    """A `tf.distribute.MirroredStrategy` over `devices` that keeps integer batches integer when Keras reduces them.

    Keras 3.15 builds a model under a strategy from one batch reduced with `strategy.reduce("MEAN", ...)`
    (`TensorFlowTrainer._maybe_symbolic_build`), which turns integer token ids into float32; kerasllm models
    reject float token ids. The reduced batch only gives Keras shapes and dtypes, so casting an integer
    MEAN back to the input's dtype changes nothing else.
    """
    global _STRATEGY_CLASS
    import tensorflow as tf

    if _STRATEGY_CLASS is None:

        class MirroredStrategy(tf.distribute.MirroredStrategy):
            def reduce(self, reduce_op, value, axis):
                dtypes = tf.nest.map_structure(lambda v: self.experimental_local_results(v)[0].dtype, value)
                reduced = super().reduce(reduce_op, value, axis)
                return tf.nest.map_structure(
                    lambda result, dtype: tf.cast(result, dtype) if dtype.is_integer else result, reduced, dtypes
                )

        _STRATEGY_CLASS = MirroredStrategy
    return _STRATEGY_CLASS(devices=list(devices))


def tf_replicas_in_scope():
    """Replicas of the `tf.distribute` strategy in scope (1 when there is none)."""
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync if tf.distribute.has_strategy() else 1


def torch_process_group():
    """`(rank, world_size)` of the initialized default `torch.distributed` process group, or `None`."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return None
    return dist.get_rank(), dist.get_world_size()


def torch_default_backend():
    """`"nccl"` when CUDA is available, else `"gloo"`."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def torch_init_process_group(backend, rank, world_size, address, port, timeout_seconds):
    """Initializes the default process group over TCP at `address:port`."""
    import torch.distributed as dist

    dist.init_process_group(
        backend=backend, init_method=f"tcp://{address}:{port}", rank=rank, world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_seconds),
    )


def torch_broadcast(variables, source=0):
    """Overwrites every process's `variables` with process `source`'s values."""
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for variable in variables:
            tensor = variable.value.data
            if tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64):
                dist.broadcast(tensor, src=source)
            else:  # e.g. uint32 seed-generator states, which collective backends may not support
                wide = tensor.to(torch.int64)
                dist.broadcast(wide, src=source)
                tensor.copy_(wide.to(tensor.dtype))


def torch_mean_over_processes(values):
    """The element-wise mean over all processes of a list of floats (one all-reduce)."""
    import torch
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces CUDA tensors only
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / dist.get_world_size()).tolist()


def torch_average_gradients(variables, world_size):
    """Registers hooks that replace each variable's gradient by its mean over all processes.

    The hook runs as soon as autograd has accumulated a parameter's gradient, so Keras's train step reads
    averaged gradients in `optimizer.apply`. Every process must compute gradients for the same parameters
    in the same order (true for one model run on every process), or the all-reduces would not pair up.

    Returns:
        The hook handles; `handle.remove()` undoes each.
    """
    import torch.distributed as dist

    def average(parameter):
        dist.all_reduce(parameter.grad)
        parameter.grad.div_(world_size)

    return [
        variable.value.register_post_accumulate_grad_hook(average)
        for variable in variables
        if variable.value.requires_grad
    ]
