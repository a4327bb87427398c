import keras
import numpy as np
from keras import ops

from kerasllm.models import decoding
from kerasllm.models.language_model import LanguageModel
from kerasllm.models.presets import CAUSAL_LM_PRESETS
from kerasllm.models.sampling import select_next_tokens, validate_sampling


@keras.saving.register_keras_serializable(package="kerasllm")
class CausalLM(LanguageModel):
    """Decoder-only Transformer language model, GPT-2 or Llama style, trained with `model.fit()`.

    Maps token ids `(B, T)` to next-token logits `(B, T, V)` (float32, also under mixed precision).
    Inputs may also be a dict `{"token_ids": ..., "padding_mask": ...}`. The configuration switches
    between GPT-2 style (`position_embedding="learned"`, `normalization="layernorm"`,
    `activation="gelu"`) and Llama style (`"rotary"`, `"rmsnorm"`, `"swiglu"`, `num_key_value_heads`
    below `num_heads` for grouped-query attention). Named presets: `CausalLM.presets`.

    Args:
        vocabulary_size: int. Number of token ids (`tokenizer.vocabulary_size`).
        num_layers: int. Number of decoder blocks.
        num_heads: int. Query heads per block.
        hidden_dim: int. Width of the residual stream.
        intermediate_dim: int. Inner width of the feed-forward networks.
        max_sequence_length: int. Longest input (and generated) sequence. Defaults to `1024`.
        num_key_value_heads: int. Key/value heads; must divide `num_heads`. Defaults to `num_heads`.
        head_dim: int. Width of each head. Defaults to `hidden_dim // num_heads`.
        position_embedding: str. `"learned"` or `"rotary"`. Defaults to `"learned"`.
        normalization: str. `"layernorm"` or `"rmsnorm"`. Defaults to `"layernorm"`.
        activation: str. `"gelu"`, `"relu"` or `"swiglu"`. Defaults to `"gelu"`.
        use_bias: bool. Biases in the projections. Defaults to `True`.
        tie_word_embeddings: bool. Reuse the token embedding as the output head. Defaults to `True`.
        dropout: float. Embedding and residual dropout. Defaults to `0`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        rope_max_wavelength: float. RoPE base. Defaults to `10000`.
        remat: bool. Recompute each block's activations in the backward pass instead of keeping
            them (gradient checkpointing through `keras.remat`): less memory for long sequences,
            about one more forward pass of compute; needs `dropout=0`. Defaults to `False`.
        **kwargs: standard `keras.Model` arguments, e.g. `name`, `dtype="mixed_bfloat16"`.

    Example:

    >>> text = kerasllm.datasets.shakespeare()
    >>> tokenizer = kerasllm.tokenizers.BytePairTokenizer.train(text, vocabulary_size=2048)
    >>> train, val = kerasllm.data.language_modeling_splits(text, tokenizer, sequence_length=128)
    >>> model = kerasllm.models.CausalLM.from_preset("tiny", vocabulary_size=tokenizer.vocabulary_size)
    >>> model.compile(optimizer="adamw", loss=kerasllm.losses.CausalLMLoss(),
    ...               metrics=[kerasllm.metrics.Perplexity()])
    >>> model.fit(train, validation_data=val, epochs=1)
    >>> model.generate("ROMEO:", tokenizer=tokenizer, max_new_tokens=40)
    """

    causal = True
    presets = CAUSAL_LM_PRESETS

    def call_with_cache(self, token_ids, cache, cache_index):
        """One decoding step: logits of the last position `(B, V)` and the updated cache.

        Args:
            token_ids: int tensor `(B, T)` holding the tokens at positions `cache_index ... + T - 1`.
            cache: tensor `(B, L, 2, S, K, H)` from `self.backbone.initial_cache(B, S)`.
            cache_index: int. Position of `token_ids[:, 0]`. With a soft prompt (prompt tuning) it
                counts real tokens: the call with `cache_index=0` (a Python int) also writes the
                virtual tokens to the cache.
        """
        hidden, cache = self.backbone(token_ids, cache=cache, cache_index=cache_index)
        return self.logits(hidden[:, -1:, :])[:, 0, :], cache

    def generate(
        self,
        prompts,
        tokenizer=None,
        max_new_tokens=64,
        greedy=False,
        temperature=1.0,
        top_k=None,
        top_p=None,
        seed=None,
        stop_token_ids=None,
        sampler="device",
    ):
        """Continues one or several prompts, decoding with the key/value cache.

        Prompts of different lengths are batched together: each row keeps its own prompt tokens and
        starts sampling where its prompt ends. By default the prefill and the whole decode loop run as
        one compiled program on the device (XLA on JAX and TensorFlow), sampling included, one program
        per batch size and length bucket (prompt plus new tokens, rounded up to a multiple of 64), so
        prompts of different lengths reuse it; the first call of a shape pays the compilation.

        Args:
            prompts: a string or list of strings (needs `tokenizer`), or token ids: a list of ints,
                a list of lists of ints, or a NumPy array of shape `(T,)` or `(B, T)`.
            tokenizer: a `kerasllm.tokenizers.Tokenizer`; needed for text prompts.
            max_new_tokens: int. Tokens to add per prompt (fewer if the model's
                `max_sequence_length` is reached first). Defaults to `64`.
            greedy: bool. Always take the most likely token. Defaults to `False`.
            temperature: float. Sampling temperature; `0` is greedy. Defaults to `1.0`.
            top_k: int. Sample only among the k most likely tokens. Defaults to `None`.
            top_p: float. Nucleus sampling threshold. Defaults to `None`.
            seed: int. Seed for sampling; the same seed gives the same text. Defaults to `None`.
            stop_token_ids: iterable of int. A row stops after emitting one of these (it is not
                returned). Defaults to the tokenizer's end-of-text id, or none without a tokenizer.
            sampler: str. `"device"` (the compiled loop; sampling in float32, so a seed gives the
                same text on a given backend) or `"host"` (one model call per token from Python, sampling
                in NumPy float64, so a seed gives the same text on every backend; much slower).
                Defaults to `"device"`.

        Returns:
            Text (prompt followed by its continuation) for text prompts, in the same form (a string or a
            list); token ids otherwise (a list of int lists, or a 1-D array for a 1-D prompt).
        """
        validate_sampling(temperature, top_k, top_p)
        if sampler not in ("device", "host"):
            raise ValueError(f"`sampler` must be 'device' or 'host', got {sampler!r}.")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}.")
        text, single = _prompt_kind(prompts)
        if text:
            if tokenizer is None:
                raise ValueError("Text prompts need a tokenizer: pass `tokenizer=` (the one the model was trained with).")
            self.check_tokenizer(tokenizer)
            batch = [prompts] if isinstance(prompts, str) else list(prompts)
            sequences = [tokenizer.encode(p) or [tokenizer.eos_token_id] for p in batch]
        else:
            if tokenizer is not None:
                self.check_tokenizer(tokenizer)
            sequences = [_prompt_row(prompts)] if single else [_prompt_row(s) for s in _prompt_rows(prompts)]
        if not sequences or any(len(s) == 0 for s in sequences):
            raise ValueError(
                "Each prompt needs at least one token; got an empty prompt. Give at least one token per "
                "prompt (e.g. the tokenizer's `eos_token_id` to generate from nothing)."
            )
        for row in sequences:
            self.check_token_ids(np.asarray(row)[None], name="prompt token ids")
        if stop_token_ids is None:
            stop_token_ids = () if tokenizer is None else (tokenizer.eos_token_id,)
        stop_token_ids = np.asarray(sorted(set(int(t) for t in stop_token_ids if t is not None)), dtype=np.int32)

        sampling = dict(greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p)
        rng = np.random.default_rng(seed)
        if max_new_tokens == 0:
            generated = [[] for _ in sequences]
        elif sampler == "device":
            generated = decoding.decode(self, sequences, max_new_tokens, stop_token_ids, rng, **sampling)
        else:
            generated = self._generate_ids(sequences, max_new_tokens, rng, stop_token_ids, sampling)
        if text:
            outputs = [tokenizer.decode(prompt + new) for prompt, new in zip(sequences, generated)]
            return outputs[0] if isinstance(prompts, str) else outputs
        outputs = [list(map(int, prompt)) + new for prompt, new in zip(sequences, generated)]
        return np.asarray(outputs[0], dtype=np.int32) if single else outputs

    def _generate_ids(self, sequences, max_new_tokens, rng, stop_token_ids, sampling):
        """Returns, per row, the list of new token ids (stop token excluded)."""
        batch_size = len(sequences)
        lengths = np.array([len(s) for s in sequences])
        # A soft prompt takes `num_virtual_tokens` of the positions (the cache adds them itself).
        total = min(int(lengths.max()) + max_new_tokens, self.max_input_length)
        buffer = np.zeros((batch_size, total), dtype=np.int32)
        in_prompt = np.zeros((batch_size, total), dtype=bool)
        for row, sequence in enumerate(sequences):
            buffer[row, : len(sequence)] = sequence
            in_prompt[row, : len(sequence)] = True
        start = int(lengths.min())
        cache = self.backbone.initial_cache(batch_size, total)
        logits, cache = self.call_with_cache(ops.convert_to_tensor(buffer[:, :start]), cache, 0)
        finished = np.zeros(batch_size, dtype=bool)
        new_tokens = [[] for _ in range(batch_size)]
        for position in range(start, total):
            chosen = select_next_tokens(ops.convert_to_numpy(logits), rng, **sampling)
            token = np.where(in_prompt[:, position], buffer[:, position], chosen)
            for row in np.flatnonzero(~in_prompt[:, position] & ~finished):
                if len(new_tokens[row]) >= max_new_tokens or token[row] in stop_token_ids:
                    finished[row] = True
                else:
                    new_tokens[row].append(int(token[row]))
            if finished.all() or position == total - 1:
                break
            buffer[:, position] = token
            logits, cache = self.call_with_cache(ops.convert_to_tensor(token[:, None]), cache, position)
        return new_tokens


def _prompt_rows(prompts):
    """The rows of a batch of token-id prompts; a 0-d array is no batch."""
    if isinstance(prompts, np.ndarray) and prompts.ndim != 2:
        raise ValueError(
            f"Token-id prompts must have shape (T,) for one prompt or (B, T) for a batch, but got shape "
            f"{prompts.shape}. Pass a list or array of ids (e.g. `[id]`), or remove extra axes with "
            "`ids.squeeze(-1)`."
        )
    return list(prompts)


def _prompt_row(row):
    """One prompt as a list of ids; it must be 1-D (ids are checked after)."""
    array = np.asarray(row)
    if array.ndim != 1:
        raise ValueError(
            f"Each token-id prompt must be a 1-D sequence of ids, but one has shape {array.shape}. Use "
            "shape (T,) for one prompt or (B, T) for a batch; remove extra axes with `ids.squeeze(-1)`."
        )
    return list(array)


def _prompt_kind(prompts):
    """Returns `(is_text, is_single)` for the forms `generate` accepts."""
    if isinstance(prompts, str):
        return True, True
    if isinstance(prompts, np.ndarray):
        return False, prompts.ndim == 1
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError(
            "`prompts` must be a string, a non-empty list of strings, or token ids (a list of ints, a list "
            f"of lists of ints, or an array); got {type(prompts).__name__} {prompts!r:.80}. Wrap a single id in "
            "a list (`[id]`), or pass text with `tokenizer=`."
        )
    first = prompts[0]
    if isinstance(first, str):
        return True, False
    return False, isinstance(first, (int, np.integer))
