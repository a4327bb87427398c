"""Small helpers the family converters share."""


def check(condition, message):
    """Raises a `ValueError` with `message` unless `condition` holds."""
    if not condition:
        raise ValueError(message)


def linear_rope_scaling(factor):
    """KerasHub's `rope_scaling_factor` (frequencies divided by it) as a kerasllm `rope_scaling`."""
    return None if float(factor) == 1.0 else {"rope_type": "linear", "factor": float(factor)}


def tied(backbone):
    """Whether the KerasHub output head reuses the token embedding."""
    return bool(backbone.token_embedding.tie_weights)
