"""Stratified sampling with weights and minimums; EDA augmentation; back-translation through two real
(small, random-weight) seq2seq models built here."""

import pytest

from edgellm.data.augment import EDA, back_translate, load_synonyms
from edgellm.data.sample import quotas, stratified_sample
from edgellm.errors import EdgeLLMError


def records():
    out = []
    for cls, n in (("en", 900), ("de", 80), ("fr", 15), ("sw", 5)):
        out += [{"id": f"{cls}{i}", "lang": cls, "text": f"t{i}"} for i in range(n)]
    return out


def test_quotas_follow_weights_and_keep_the_tail():
    counts = {"en": 900, "de": 80, "fr": 15, "sw": 5}
    q = quotas(counts, 100)
    assert sum(q.values()) == 100 and q["en"] > q["de"] > q["fr"]  # proportional
    q = quotas(counts, 100, min_per_class=10)
    assert q["sw"] == 5 and q["fr"] == 10 and sum(q.values()) == 100  # the tail stays, capped by what exists
    q = quotas(counts, 100, weights={"en": 0.5, "de": 0.5}, min_per_class=2)
    assert abs(q["en"] - q["de"]) <= 1 and q["fr"] == 2 and q["sw"] == 2
    with pytest.raises(EdgeLLMError, match="class 'xx'"):
        quotas(counts, 10, weights={"xx": 1.0})


def test_stratified_sample_is_reproducible_and_uniform_within_class():
    recs = records()
    s1, rep = stratified_sample(recs, "lang", 60, min_per_class=5, seed=1)
    s2, _ = stratified_sample(recs, "lang", 60, min_per_class=5, seed=1)
    s3, _ = stratified_sample(recs, "lang", 60, min_per_class=5, seed=2)
    assert s1 == s2 and s1 != s3 and len(s1) == 60
    assert rep["classes"]["sw"]["taken"] == 5 and rep["classes"]["fr"]["taken"] == 5
    en = [int(r["id"][2:]) for r in s1 if r["lang"] == "en"]
    assert min(en) < 300 and max(en) > 600  # spread over the class, not its first rows
    with pytest.raises(EdgeLLMError, match="no field 'label'"):
        stratified_sample(recs, "label", 10)


def test_eda_operations_are_seeded_and_do_what_they_say():
    text = "the quick method can help people find a good answer to a hard problem fast"
    a = EDA(seed=3).augment(text, alpha=0.2, n_aug=4)
    b = EDA(seed=3).augment(text, alpha=0.2, n_aug=4)
    assert a == b and len(a) == 4 and all(x != text for x in a)
    words = text.split()
    sr, ri, rs, rd = a
    assert len(sr.split()) == len(words) and sum(x != y for x, y in zip(sr.split(), words)) >= 1
    assert (
        any(
            w in load_synonyms()["help"] + load_synonyms()["answer"] + load_synonyms()["problem"]
            for w in sr.split()
        )
        or sr != text
    )
    assert len(ri.split()) > len(words)
    assert sorted(rs.split()) == sorted(words)
    assert len(rd.split()) < len(words)
    custom = EDA({"quick": ["speedy"]}, seed=0)
    assert custom.synonym_replace(["quick"], 1) == ["speedy"]


def _seq2seq(path, seed):
    """A tiny random-weight BART with a word-level tokenizer, saved like any local model."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    vocab = {
        t: i
        for i, t in enumerate(
            [
                "<pad>",
                "<s>",
                "</s>",
                "<unk>",
                *["the", "a", "quick", "brown", "fox", "dog", "jumps", "over", "lazy"],
            ]
        )
    }
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    torch.manual_seed(seed)
    cfg = BartConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
    )
    BartForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_back_translation_runs_two_local_models(tmp_path):
    fwd, bwd = _seq2seq(tmp_path / "fwd", 0), _seq2seq(tmp_path / "bwd", 1)
    out = back_translate(["the quick brown fox", "a lazy dog jumps"], fwd, bwd, max_new_tokens=8)
    again = back_translate(["the quick brown fox", "a lazy dog jumps"], fwd, bwd, max_new_tokens=8)
    assert len(out) == 2 and out == again and all(isinstance(t, str) for t in out)
    vocab = set(["the", "a", "quick", "brown", "fox", "dog", "jumps", "over", "lazy"])
    assert all(set(t.split()) <= vocab for t in out)  # decoded through the backward model's vocabulary
    with pytest.raises(EdgeLLMError, match="not a model folder"):
        back_translate(["x"], tmp_path, bwd)


def test_cli_sample_and_augment(tmp_path, capsys):
    import json

    from edgellm.cli import main

    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records()))
    assert (
        main(
            [
                "data",
                "sample",
                str(src),
                "-o",
                str(tmp_path / "s"),
                "--by",
                "lang",
                "--n",
                "40",
                "--min-per-class",
                "5",
            ]
        )
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert rep["classes"]["sw"]["taken"] == 5
    rows = [json.loads(x) for x in (tmp_path / "s/part-00000.jsonl").open()]
    assert len(rows) == 40
    assert main(["data", "augment", str(tmp_path / "s"), "-o", str(tmp_path / "a"), "--n-aug", "2"]) == 0
    aug = [json.loads(x) for x in (tmp_path / "a/part-00000.jsonl").open()]
    assert len(aug) == 120 and sum(r["augmented"] == "eda" for r in aug) == 80
    assert (
        main(
            [
                "data",
                "sample",
                str(src),
                "-o",
                str(tmp_path / "s2"),
                "--by",
                "lang",
                "--n",
                "5",
                "--weights",
                "{bad",
            ]
        )
        == 2
    )
