"""Records what chosen sublayers output during a forward pass, inside the compiled step.

Feature distillation needs hidden states that the model does not return. Instead of a second forward
pass, the recorder wraps each chosen layer's `call` on the instance (restored by `stop()`) and keeps
its last output; the training step's forward pass (traced or eager) fills it and the loss reads it in
the same step, so the tensors are the same traced values on every backend.
"""


class LayerOutputRecorder:
    """Keeps the latest output of each named layer while started.

    Args:
        layers: dict `key -> keras.layers.Layer`. Layers whose outputs to keep. A layer that returns a
            tuple (e.g. a block returning `(x, cache)`) is recorded by its first element.
    """

    def __init__(self, layers):
        self.layers = dict(layers)
        self.outputs = {}
        self._saved = {}

    def start(self):
        for key, layer in self.layers.items():
            if key in self._saved:
                continue
            own = layer.__dict__.get("call")
            self._saved[key] = own
            object.__setattr__(layer, "call", self._recording(key, layer.call))

    def stop(self):
        for key, own in self._saved.items():
            layer = self.layers[key]
            if own is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", own)
        self._saved = {}
        self.outputs = {}

    def pop(self, key):
        """The output recorded for `key` since the last `pop`; raises a `ValueError` if there is none."""
        if key not in self.outputs:
            raise ValueError(
                f"Layer {self.layers[key].name!r} produced no output in this step: it is not on the path from "
                "the model's inputs to its outputs. Choose a layer the forward pass runs."
            )
        return self.outputs.pop(key)

    def _recording(self, key, call):
        def recorded_call(*args, **kwargs):
            output = call(*args, **kwargs)
            self.outputs[key] = output[0] if isinstance(output, (tuple, list)) else output
            return output

        return recorded_call
