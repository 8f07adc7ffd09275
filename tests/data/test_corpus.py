import json

import pytest

from edgellm.data import pydoc_topics, read_corpus, sentences, split
from edgellm.errors import EdgeLLMError


def test_default_corpus_split_is_disjoint_and_stable():
    docs = pydoc_topics()
    assert len(docs) > 50 and sum(len(d.text) for d in docs) > 400_000
    train, held = split(docs)
    assert {d.id for d in train}.isdisjoint({d.id for d in held})
    assert len(train) + len(held) == len(docs) and 0 < len(held) < len(docs) // 4
    assert sorted(d.id for d in split(list(reversed(docs)))[1]) == sorted(d.id for d in held)  # order-free
    assert len(sentences(held)) > 100


def test_text_jsonl_and_directory(tmp_path):
    (tmp_path / "a.txt").write_text("First paragraph here.\n\nSecond one.\n")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": "json doc", "id": "x"}) + "\n\n" + json.dumps({"text": "two"}) + "\n"
    )
    assert [d.text for d in read_corpus(tmp_path / "a.txt")] == ["First paragraph here.", "Second one."]
    assert [d.id for d in read_corpus(tmp_path / "b.jsonl")] == ["x", "b.jsonl:3"]
    assert len(read_corpus(tmp_path)) == 4
    (tmp_path / "c.jsonl").write_text('{"body": "no text field"}\n')
    with pytest.raises(EdgeLLMError, match="no string field 'text'"):
        read_corpus(tmp_path / "c.jsonl")
    assert read_corpus(tmp_path / "c.jsonl", text_field="body")[0].text == "no text field"
    with pytest.raises(EdgeLLMError, match="does not exist"):
        read_corpus(tmp_path / "nope.txt")
