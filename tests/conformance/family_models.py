"""Tiny random-weight models of every family the README lists, each saved as a Hugging Face directory with a
small tokenizer of its own kind beside it (WordPiece for BERT/DistilBERT/ELECTRA, byte-level BPE for
RoBERTa, GPT-2 and the Llama-style decoders, a Unigram model for XLM-RoBERTa), trained here on the bundled
text: nothing is downloaded. Hidden 64, 2 layers, vocabulary ~300, seeded. (conftest's ``decoder_dir`` models
have no tokenizer; the stages that read text, generation and calibration, need one, with its special ids
in the config.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

VOCAB = 300
HIDDEN = 64
# encoders and MHA decoders: 4 heads of 16; Llama-style decoders: GQA 4:2
ENC = dict(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
DEC = dict(
    hidden_size=HIDDEN,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


def _texts() -> list[str]:
    from edgellm.compress.calibration import corpus_parts

    return [d.text for d in corpus_parts(None, None)[0][:200]]


def _wordpiece(tmp: Path) -> Any:
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    tk = BertWordPieceTokenizer(lowercase=True)
    tk.train_from_iterator(
        _texts(), vocab_size=VOCAB, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    tmp.mkdir(parents=True, exist_ok=True)
    tk.save_model(str(tmp))
    return BertTokenizerFast(vocab_file=str(tmp / "vocab.txt"), model_max_length=128)


def _byte_bpe(tmp: Path, specials: list[str]) -> tuple[str, str]:
    from tokenizers import ByteLevelBPETokenizer

    tk = ByteLevelBPETokenizer(add_prefix_space=False)
    tk.train_from_iterator(_texts(), vocab_size=VOCAB, special_tokens=specials, show_progress=False)
    tmp.mkdir(parents=True, exist_ok=True)
    tk.save_model(str(tmp))
    return str(tmp / "vocab.json"), str(tmp / "merges.txt")


def _roberta_tok(tmp: Path) -> Any:
    from transformers import RobertaTokenizerFast

    vocab, merges = _byte_bpe(tmp, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return RobertaTokenizerFast(vocab_file=vocab, merges_file=merges, model_max_length=128)


def _unigram_tok(tmp: Path) -> Any:
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaTokenizerFast

    tk = SentencePieceUnigramTokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tk.train_from_iterator(_texts(), vocab_size=VOCAB, special_tokens=specials, unk_token="<unk>")
    return XLMRobertaTokenizerFast(tokenizer_object=tk._tokenizer, model_max_length=128)


def _decoder_tok(tmp: Path) -> Any:
    from transformers import GPT2TokenizerFast

    vocab, merges = _byte_bpe(tmp, ["<|endoftext|>", "<pad>"])
    return GPT2TokenizerFast(
        vocab_file=vocab,
        merges_file=merges,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
        model_max_length=256,
    )


TOKENIZERS = {
    "bert": _wordpiece,
    "distilbert": _wordpiece,
    "electra": _wordpiece,
    "roberta": _roberta_tok,
    "xlm-roberta": _unigram_tok,
}


def _ids(tok: Any) -> dict[str, int]:
    return {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }


def config_of(family: str, tok: Any) -> Any:
    """The tiny config of ``family`` for a tokenizer ``tok``."""
    import transformers as tf

    v = len(tok)
    if family == "bert":
        return tf.BertConfig(vocab_size=v, max_position_embeddings=128, pad_token_id=tok.pad_token_id, **ENC)
    if family == "electra":  # ELECTRA's embeddings are narrower than its layers (a projection between)
        return tf.ElectraConfig(
            vocab_size=v, embedding_size=32, max_position_embeddings=128, pad_token_id=tok.pad_token_id, **ENC
        )
    if family == "distilbert":
        return tf.DistilBertConfig(
            vocab_size=v,
            dim=HIDDEN,
            n_layers=2,
            n_heads=4,
            hidden_dim=128,
            max_position_embeddings=128,
            pad_token_id=tok.pad_token_id,
        )
    if family in ("roberta", "xlm-roberta"):  # positions start after the padding id
        cls = tf.RobertaConfig if family == "roberta" else tf.XLMRobertaConfig
        return cls(vocab_size=v, max_position_embeddings=130, type_vocab_size=1, **ENC, **_ids(tok))
    ids = _ids(tok)
    if family == "gpt2":
        return tf.GPT2Config(vocab_size=v, n_embd=HIDDEN, n_layer=2, n_head=4, n_positions=256, **ids)
    if family == "llama":
        return tf.LlamaConfig(vocab_size=v, tie_word_embeddings=False, **DEC, **ids)
    if family == "mistral":
        return tf.MistralConfig(vocab_size=v, sliding_window=None, **DEC, **ids)
    if family == "qwen2":  # q/k/v biases, tied head
        return tf.Qwen2Config(vocab_size=v, tie_word_embeddings=True, **DEC, **ids)
    if family == "qwen3":  # q/k norms, head_dim not hidden/heads
        return tf.Qwen3Config(vocab_size=v, head_dim=32, tie_word_embeddings=True, **DEC, **ids)
    if family == "phi3":  # fused qkv and gate|up, partial rotary
        return tf.Phi3Config(vocab_size=v, partial_rotary_factor=0.5, tie_word_embeddings=False, **DEC, **ids)
    if family == "gemma":  # scaled embeddings, (1 + w) RMSNorm, tied head, gelu
        return tf.GemmaConfig(vocab_size=v, head_dim=16, **DEC, **ids)
    if family == "gemma2":  # Gemma plus logit soft-capping and a sliding window every other layer
        return tf.Gemma2Config(vocab_size=v, head_dim=16, sliding_window=8, **DEC, **ids)
    if family == "gemma3_text":  # query/key norms, embedding scale inside the embedding module
        return tf.Gemma3TextConfig(vocab_size=v, head_dim=16, sliding_window=8, **DEC, **ids)
    raise KeyError(family)


def save_family(family: str, path: Path) -> Path:
    """A tiny random-weight ``family`` model with its tokenizer, saved into ``path`` (seeded)."""
    import torch
    import transformers as tf

    tok = TOKENIZERS.get(family, _decoder_tok)(path.parent / f"{path.name}-tokenizer")
    cfg = config_of(family, tok)
    torch.manual_seed(0)
    model = (tf.AutoModelForCausalLM if _is_decoder(family) else tf.AutoModel).from_config(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _is_decoder(family: str) -> bool:
    return family not in ("bert", "roberta", "xlm-roberta", "distilbert", "electra")
