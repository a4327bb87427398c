"""`collect_once`: Keras's per-variable garbage collections during a conversion skip the older objects."""

import gc
import weakref

import numpy as np
import pytest

import kerasllm
from kerasllm.utils.collection import collect_once


@pytest.fixture
def unfrozen():
    """The autouse fixture froze what existed before this test (tests/conftest.py); undo that here."""
    gc.unfreeze()
    yield
    gc.collect()
    gc.freeze()


class Node:
    pass


def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a


@pytest.fixture
def full_collections():
    """Records `gc.get_freeze_count()` at the start of every full (generation 2) collection."""
    seen = []

    def callback(phase, info):
        if phase == "start" and info["generation"] == 2:
            seen.append(gc.get_freeze_count())

    gc.callbacks.append(callback)
    yield seen
    gc.callbacks.remove(callback)


def test_block_freezes_then_collects_the_garbage_once(unfrozen, full_collections):
    garbage = cycle()
    dead = weakref.ref(garbage)
    with collect_once():
        assert gc.get_freeze_count() > 0
        del garbage
        gc.collect()  # what Keras's `Layer.__delattr__` runs: the frozen cycle is not scanned
        assert dead() is not None
    assert gc.get_freeze_count() == 0
    assert dead() is None  # the one collection at the end freed it
    assert full_collections[-1] == 0


def test_a_freeze_from_elsewhere_is_left_as_it_was(unfrozen):
    kept = cycle()
    gc.freeze()
    with collect_once():
        pass
    # Still frozen: `gc.get_objects()` lists the unfrozen objects only. (The freeze count itself is no
    # measure: frozen objects that other threads free leave it.)
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())
    gc.unfreeze()
    assert any(o is kept for o in gc.get_objects())
    del kept


def tiny():
    model = kerasllm.models.CausalLM(vocabulary_size=31, num_layers=2, num_heads=2, hidden_dim=16,
                                     intermediate_dim=32, max_sequence_length=8)
    model(np.zeros((1, 8), "int32"))
    return model


def test_quantize_and_lora_merge_run_keras_collections_over_new_objects_only(unfrozen, full_collections):
    model = tiny()
    full_collections.clear()  # Python's own collections while the model was built ran with nothing frozen
    kerasllm.quantization.quantize(model, "int8")
    # Keras collected once per quantized kernel, each time with the older objects frozen; then the
    # block's own collection ran over everything.
    assert len(full_collections) >= 12 and all(count > 0 for count in full_collections[:-1])
    assert full_collections[-1] == 0 and gc.get_freeze_count() == 0
    model = tiny()
    full_collections.clear()
    model.quantize("int8")  # Keras's own API on a kerasllm model
    assert len(full_collections) >= 12 and all(count > 0 for count in full_collections[:-1])
    assert full_collections[-1] == 0 and gc.get_freeze_count() == 0
    assert "int8" in str(model.backbone.blocks[0].attention.query.kernel.dtype)
    model = tiny()
    model.enable_lora(rank=2)
    full_collections.clear()
    model.merge_lora()
    assert len(full_collections) >= 2 * 4 and all(count > 0 for count in full_collections[:-1])
    assert full_collections[-1] == 0 and gc.get_freeze_count() == 0
