"""Activation decoding trusts nothing a peer sends: malformed metadata, sizes that disagree with the
shape, scales that are not finite numbers > 0 and compressed payloads that expand past their shape are
each refused with an ``EdgeLLMError`` naming the field and the bad value, without building the array."""

import numpy as np
import pytest

from edgellm.errors import EdgeLLMError
from edgellm.runtime.codecs import Codec, check_scales, compress, decompress


@pytest.mark.parametrize(
    "value,words",
    [
        ("abc", ["'abc'", "not a number"]),
        ("0.5", ["'0.5'", "not a number"]),  # a JSON string is not a scale, even when it reads as one
        (True, ["True", "not a number"]),
        (None, ["None", "not a number"]),
        ({"s": 1}, ["{'s': 1}", "not a number"]),
        ([[1.0], [1.0, 2.0]], ["not a number"]),
        (float("nan"), ["nan", "not finite and > 0"]),
        (1e39, ["inf", "not finite and > 0"]),  # past float32's range
        (-0.5, ["-0.5", "not finite and > 0"]),
        (0, ["0.0", "not finite and > 0"]),
        ([0.1, float("inf"), 0.2], ["inf at [1]", "(1 of 3)"]),
    ],
)
def test_bad_scales_are_named(value, words):
    with pytest.raises(EdgeLLMError) as e:
        check_scales(value, "input 'hidden' parameter 'scale'")
    for w in ["input 'hidden' parameter 'scale'", *words]:
        assert w in str(e.value)


def test_good_scales_pass_as_float32():
    assert check_scales(0.25).dtype == np.float32
    assert check_scales([[0.1], [2]]).shape == (2, 1)


def test_int8_payload_scales_and_metadata_are_checked():
    c = Codec("int8")
    x = np.random.default_rng(0).standard_normal((1, 4, 16)).astype(np.float32)
    payload, meta = c.encode(x)
    n = meta["codes_bytes"]
    nan = payload[:n] + np.array([0.1, np.nan, 0.1, 0.1], "<f4").tobytes()
    with pytest.raises(EdgeLLMError, match=r"int8 scale nan at \[0, 1, 0\] is not finite and > 0"):
        c.decode(nan, meta)
    for bad, match in [
        ({**meta, "scale": "abc"}, r"unknown keys \['scale'\]"),
        ({**meta, "shape": "abc"}, "shape 'abc' is not a list of integers"),
        ({**meta, "shape": [1, True, 16]}, "not a list of integers"),
        ({**meta, "shape": [1, -4, -16]}, "dimension -4"),
        ({**meta, "shape": [2**32, 2**32, 16]}, "needs"),  # exact sizes: 2**68 does not wrap to 0
        ({**meta, "codes_bytes": -1}, "codes_bytes -1 is not an integer in 0..80"),
        ({**meta, "codes_bytes": 1.5}, "codes_bytes 1.5"),
    ]:
        with pytest.raises(EdgeLLMError, match=match):
            c.decode(payload, bad)
    assert np.allclose(c.decode(payload, meta), x, atol=0.05)  # the valid payload still decodes


@pytest.mark.parametrize("method", ["zstd", "lz4"])
def test_a_compressed_payload_never_expands_past_its_shape(method):
    raw = bytes(8 << 20)  # 8 MiB of zeros: a few KiB compressed
    c = compress(raw, method)
    assert decompress(c, method, len(raw)) == raw
    with pytest.raises(EdgeLLMError, match="1001 or more bytes, the shape needs 1000"):
        decompress(c, method, 1000)  # reading stops one byte past what the shape needs
    with pytest.raises(EdgeLLMError, match="truncated|needs"):
        decompress(c[:-3], method, len(raw))
