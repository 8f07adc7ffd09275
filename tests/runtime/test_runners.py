import numpy as np
import pytest

from edgellm.errors import EdgeLLMError
from edgellm.runtime import RUNNERS, make_runner


def test_torch_and_ort_runners_agree(minilm, minilm_artifact):
    feeds = minilm.fixed_inputs()
    t = make_runner(minilm)
    o = make_runner(minilm_artifact, intra_op_threads=1)
    assert t.runtime == "torch" and o.runtime == "onnxruntime"
    np.testing.assert_allclose(
        o.run(feeds)["sentence_embedding"], t.run(feeds)["sentence_embedding"], atol=1e-5
    )
    assert {"torch", "onnxruntime"} <= set(RUNNERS)


def test_ort_session_options_are_applied(minilm_artifact):
    r = make_runner(
        minilm_artifact,
        intra_op_threads=1,
        inter_op_threads=1,
        graph_optimization="basic",
        session_options={"enable_mem_pattern": False, "session.intra_op.allow_spinning": "0"},
    )
    so = r.session_options
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
    assert so.enable_mem_pattern is False
    assert str(so.graph_optimization_level).endswith("ENABLE_BASIC")


def test_bad_inputs_get_clear_errors(minilm_artifact, minilm):
    r = make_runner(minilm_artifact)
    feeds = minilm.fixed_inputs()
    with pytest.raises(EdgeLLMError, match="input 'input_ids' has dtype float32, expected int64"):
        r.run({**feeds, "input_ids": feeds["input_ids"].astype("float32")})
    with pytest.raises(EdgeLLMError, match="input 'attention_mask' is missing"):
        r.run({"input_ids": feeds["input_ids"], "token_type_ids": feeds["token_type_ids"]})
    with pytest.raises(EdgeLLMError, match="unknown graph_optimization"):
        make_runner(minilm_artifact, graph_optimization="max")
    with pytest.raises(EdgeLLMError, match="unknown runtime"):
        make_runner(minilm_artifact, "nope")
