import numpy as np
import pytest

from kerasllm.data import pack_documents


def test_documents_joined_with_eos():
    stream = pack_documents([[5, 6], np.array([7]), [], [8, 9]], eos_token_id=1)
    assert stream.dtype == np.int32
    np.testing.assert_array_equal(stream, [5, 6, 1, 7, 1, 8, 9])


def test_no_separator():
    np.testing.assert_array_equal(pack_documents([[5], [6]], eos_token_id=None), [5, 6])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="no tokens"):
        pack_documents([[], []], eos_token_id=1)
    with pytest.raises(ValueError, match="negative"):
        pack_documents([[3, -1]], eos_token_id=1)
    with pytest.raises(ValueError, match="dtype"):
        pack_documents([[3.0, 1.0]], eos_token_id=1)
    with pytest.raises(ValueError, match="eos_token_id"):
        pack_documents([[3]], eos_token_id=-1)
