"""Compiled decoding for `CausalLM.generate`: prefill and the whole decode loop as one program.

For a batch of prompts padded to a length bucket, one compiled function runs the prefill (every
position of the buffer through the model, filling the key/value cache) and an `ops.while_loop` over
the positions: pick the next token on the device (`sampling.sample_on_device`), keep prompt tokens
where a row's prompt is longer, stop rows at a stop token or after `max_new_tokens`, and feed the
token back with the position as a tensor. Nothing returns to the host until the loop ends, and
nothing retraces per token: one program per (batch size, length bucket, sampling mode).
"""

import numpy as np
from keras import ops

from kerasllm.models.sampling import sample_on_device
from kerasllm.utils.backend_compile import compile_with_variables, trace_step

# Total lengths (prompt + new tokens) are rounded up to a multiple of this, so prompts of different
# lengths share a compiled program.
LENGTH_BUCKET = 64


def bucket_length(needed, limit):
    """The buffer length for `needed` positions: the next multiple of `LENGTH_BUCKET`, at most `limit`."""
    return int(min(-(-needed // LENGTH_BUCKET) * LENGTH_BUCKET, limit))


def decode(model, sequences, max_new_tokens, stop_token_ids, rng, greedy, temperature, top_k, top_p):
    """Returns, per row, the list of new token ids (stop token excluded).

    Args:
        model: a `kerasllm.models.CausalLM`.
        sequences: list of lists of int. The prompts (at least one token each).
        max_new_tokens: int. New tokens per row at most.
        stop_token_ids: int array. A row stops after emitting one of these.
        rng: `np.random.Generator`. Source of the sampling's uniform numbers.
        greedy, temperature, top_k, top_p: the sampling settings (see `CausalLM.generate`).
    """
    batch = len(sequences)
    lengths = np.array([len(s) for s in sequences], dtype=np.int32)
    needed = min(int(lengths.max()) + max_new_tokens, model.max_input_length)
    total = bucket_length(needed, model.max_input_length)
    buffer = np.zeros((batch, total), dtype=np.int32)
    for row, sequence in enumerate(sequences):
        buffer[row, : len(sequence)] = sequence
    greedy = bool(greedy or temperature == 0)
    # Drawn in the order the host sampler draws them (one per row per position from the shortest
    # prompt's end), so both samplers see the same numbers for the same seed.
    uniforms = np.zeros((batch, total), np.float32)
    start = int(lengths.min())
    if not greedy:
        uniforms[:, start:] = rng.random((total - start, batch)).T
    # A stop list of fixed size (padded with -1, which no token equals) keeps one program per setting.
    stops = np.full((max(len(stop_token_ids), 1),), -1, dtype=np.int32)
    stops[: len(stop_token_ids)] = stop_token_ids
    key = (batch, total, greedy, top_k, top_p is not None, len(stops))
    functions = model.__dict__.setdefault("_kerasllm_decode_functions", {})
    if key not in functions:
        fn = _decode_function(model, greedy=greedy, top_k=top_k, use_top_p=top_p is not None)
        functions[key] = (compile_with_variables(model, fn), fn)
    tensors = [
        buffer, lengths, uniforms, np.float32(temperature if not greedy else 1.0), np.float32(top_p or 1.0),
        np.int32(max_new_tokens), stops,
    ]
    out, counts = functions[key][0](*[ops.convert_to_tensor(t) for t in tensors])
    out, counts = ops.convert_to_numpy(out), ops.convert_to_numpy(counts)
    return [out[row, length : length + count].tolist() for row, (length, count) in enumerate(zip(lengths, counts))]


def _decode_function(model, greedy, top_k, use_top_p):
    """`fn(buffer, lengths, uniforms, temperature, top_p, max_new_tokens, stops) -> (buffer, counts)`."""

    def step(lengths, uniforms, temperature, top_p, max_new_tokens, stops, position, buffer, cache, logits,
             finished, counts):
        """One position of the loop: every tensor it needs is an argument (torch traces it once)."""
        chosen = sample_on_device(
            logits, ops.take(uniforms, position, axis=1), temperature, greedy=greedy, top_k=top_k,
            top_p=top_p if use_top_p else None,
        )
        in_prompt = position < lengths
        token = ops.where(in_prompt, ops.take(buffer, position, axis=1), chosen)
        active = ops.logical_and(ops.logical_not(in_prompt), ops.logical_not(finished))
        stopped = ops.logical_or(ops.any(token[:, None] == stops[None, :], axis=-1), counts >= max_new_tokens)
        written = ops.logical_and(active, ops.logical_not(stopped))
        token = ops.where(ops.logical_or(in_prompt, written), token, 0)
        buffer = ops.slice_update(buffer, (0, position), token[:, None])
        counts = counts + ops.cast(written, "int32")
        finished = ops.logical_or(finished, ops.logical_and(active, stopped))
        hidden, cache = model.backbone(token[:, None], cache=cache, cache_index=position)
        logits = model.logits(hidden)[:, 0]
        return position + 1, buffer, cache, logits, finished, counts

    step = trace_step(model, step)

    def fn(buffer, lengths, uniforms, temperature, top_p, max_new_tokens, stops):
        fn.traces += 1  # Python runs once per trace: tests count them
        batch, total = buffer.shape
        cache = model.backbone.initial_cache(batch, total, per_layer=True)
        hidden, cache = model.backbone(buffer, cache=cache, cache_index=0)  # prefill every position
        start = ops.min(lengths)
        logits = model.logits(ops.take(hidden, start - 1, axis=1)[:, None, :])[:, 0]
        finished = ops.zeros((batch,), dtype="bool")
        counts = ops.zeros((batch,), dtype="int32")
        constants = (lengths, uniforms, temperature, top_p, max_new_tokens, stops)

        def cond(position, buffer, cache, logits, finished, counts):
            return ops.logical_and(position < total, ops.logical_not(ops.all(finished)))

        def body(*loop):
            return step(*constants, *loop)

        loop = ops.while_loop(cond, body, (start, buffer, cache, logits, finished, counts))
        return loop[1], loop[5]

    fn.traces = 0
    fn.step = step
    return fn
