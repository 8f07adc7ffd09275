"""Batch engines on real generation artifacts: rows of different lengths decoded in one pass, prompts fed in
chunks, rows joining and leaving between passes, all equal to the single-sequence engine's logits."""

from __future__ import annotations

import numpy as np
import pytest


def reference(artifact, prompt, steps):
    """Greedy tokens and per-step logits of ``prompt`` through the single-sequence engine."""
    from edgellm.runtime.engines import open_engine

    eng = open_engine(artifact)
    logits = [np.array(eng.step(prompt))]
    toks = [int(logits[-1].argmax())]
    for _ in range(steps):
        logits.append(np.array(eng.step([toks[-1]])))
        toks.append(int(logits[-1].argmax()))
    return toks, logits


@pytest.mark.parametrize("layout", ["shared", "concat"])
def test_rows_of_any_length_join_and_leave(layout, gen_artifact, gen_concat_artifact):
    from edgellm.runtime.batch_engines import ConcatBatchEngine, PoolEngine, open_batch_engine

    art = gen_artifact if layout == "shared" else gen_concat_artifact
    rng = np.random.default_rng(0)
    prompts = [list(map(int, rng.integers(2, 4000, size=n))) for n in (5, 23, 9, 40)]
    refs = [reference(art, p, 6) for p in prompts]
    eng = open_batch_engine(art, 6)
    assert isinstance(eng, PoolEngine if layout == "shared" else ConcatBatchEngine)
    idle = eng.acquire()  # a row between prefill chunks sits inside the decode passes' rows
    eng.prefill(idle, [3, 4, 5])
    slots = [eng.acquire() for _ in prompts]
    toks = {}
    for s, p, (_, logits) in zip(slots, prompts, refs):
        for i in range(0, len(p), 8):  # chunked prefill
            last = eng.prefill(s, p[i : i + 8])
        np.testing.assert_allclose(last, logits[0], atol=1e-4)
        toks[s] = [int(last.argmax())]
    for k in range(6):
        active = slots if k % 2 == 0 else slots[1:]  # the first row leaves and rejoins
        out = eng.decode(active, [toks[s][-1] for s in active])
        assert out.shape == (len(active), refs[0][1][0].shape[0])
        for r, s in enumerate(active):
            want = refs[slots.index(s)][1][len(toks[s])]
            np.testing.assert_allclose(out[r], want, atol=1e-4)
            toks[s].append(int(out[r].argmax()))
    for s, (want, _) in zip(slots, refs):
        assert toks[s] == want[: len(toks[s])]
        assert eng.length(s) == len(prompts[slots.index(s)]) + len(toks[s]) - 1
    np.testing.assert_allclose(eng.prefill(idle, [6, 7]), reference(art, [3, 4, 5, 6, 7], 0)[1][0], atol=1e-4)
    eng.release(slots[0])
    assert eng.acquire() == slots[0] and eng.length(slots[0]) == 0  # the lowest free slot, empty


def test_slots_and_context_are_bounded(gen_artifact):
    from edgellm.errors import EdgeLLMError
    from edgellm.runtime.batch_engines import open_batch_engine

    eng = open_batch_engine(gen_artifact, 2)
    a, b = eng.acquire(), eng.acquire()
    with pytest.raises(EdgeLLMError, match="all 2 slots are taken"):
        eng.acquire()
    with pytest.raises(EdgeLLMError, match="context"):
        eng.prefill(a, [1] * (eng.context + 1))
    eng.release(b)
    with pytest.raises(EdgeLLMError, match="not acquired"):
        eng.decode([b], [1])


def test_layouts_without_a_batch_graph_run_serially(tmp_path, small_llm):
    """A static-shape (TFLite) artifact: one step engine per slot, the same tokens as the Generator."""
    pytest.importorskip("ai_edge_litert", reason="pip install 'edgellm[tflite]'")
    from edgellm.pipeline.generate_export import export_generate
    from edgellm.runtime.batch_engines import SerialEngine, open_batch_engine

    out = tmp_path / "tfl"
    export_generate(small_llm, out, target="snapdragon-8-gen-3", format="tflite", context=32, check_tokens=4)
    eng = open_batch_engine(out, 8, serial_slots=2)
    assert isinstance(eng, SerialEngine) and eng.slots == 2
    want, _ = reference(out, [0, 5, 9], 3)
    s = eng.acquire()
    toks = [int(eng.prefill(s, [0, 5, 9]).argmax())]
    for _ in range(3):
        toks.append(int(eng.decode([s], [toks[-1]])[0].argmax()))
    assert toks == want
