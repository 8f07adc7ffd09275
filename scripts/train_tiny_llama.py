"""Train the bundled `tiny-llama`: a ~10 M-parameter Llama-architecture decoder with GQA, trained on
CPython's bundled help text (pydoc_data.topics, training part of edgellm's fixed split).

Reproducible: fixed seed, fixed data split, deterministic CPU kernels. A few minutes on 2 CPU cores.

    .venv/bin/python scripts/train_tiny_llama.py                # writes edgellm/models/bundled_models/tiny-llama
    .venv/bin/python scripts/train_tiny_llama.py --steps 50 -o /tmp/tl   # a quick try

Writes: config.json, model.safetensors (fp16, <= 25 MB), tokenizer files, train_config.json,
training_log.jsonl (loss per step, held-out perplexity, unigram baseline).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "edgellm" / "models" / "bundled_models" / "tiny-llama"


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE trained on the training texts only."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=512
    )


def stream(tokenizer, texts: list[str]) -> np.ndarray:
    ids: list[int] = []
    for t in texts:
        ids += [tokenizer.bos_token_id, *tokenizer(t)["input_ids"], tokenizer.eos_token_id]
    return np.asarray(ids, dtype=np.int64)


@torch.no_grad()
def perplexity(model, ids: np.ndarray, seq: int) -> float:
    model.eval()
    n = (len(ids) - 1) // seq
    nll, count = 0.0, 0
    for i in range(0, n, 16):
        rows = [ids[j * seq : (j + 1) * seq + 1] for j in range(i, min(n, i + 16))]
        x = torch.as_tensor(np.stack([r[:-1] for r in rows]))
        y = torch.as_tensor(np.stack([r[1:] for r in rows]))
        logits = model(input_ids=x).logits.float()
        nll += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
        ).item()
        count += y.numel()
    model.train()
    return math.exp(nll / count)


def unigram_perplexity(train_ids: np.ndarray, eval_ids: np.ndarray, vocab: int) -> float:
    counts = np.bincount(train_ids, minlength=vocab).astype(np.float64) + 1.0  # add-one smoothing
    logp = np.log(counts / counts.sum())
    return float(math.exp(-logp[eval_ids[1:]].mean()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=384)  # divisible by 128: INT4 groups of 32/64/128 fit
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from transformers import LlamaConfig, LlamaForCausalLM

    from edgellm.data import pydoc_topics, split

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)

    train_docs, eval_docs = split(pydoc_topics())
    tokenizer = train_tokenizer([d.text for d in train_docs], args.vocab)
    train_ids = stream(tokenizer, [d.text for d in train_docs])
    eval_ids = stream(tokenizer, [d.text for d in eval_docs])
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    log: list[dict] = []
    unigram = unigram_perplexity(train_ids, eval_ids, len(tokenizer))
    print(
        f"params {n_params / 1e6:.2f} M, train tokens {len(train_ids)}, eval tokens {len(eval_ids)}, "
        f"unigram ppl {unigram:.1f}",
        flush=True,
    )
    t0 = time.time()
    model.train()
    for step in range(args.steps):
        starts = rng.integers(0, len(train_ids) - args.seq - 1, size=args.batch)
        batch = torch.as_tensor(np.stack([train_ids[s : s + args.seq + 1] for s in starts]))
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        out = model(input_ids=batch[:, :-1], labels=batch[:, :-1].clone())
        # labels shift inside the model: predict token t+1 from tokens <= t
        loss = out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        opt.step()
        rec = {
            "step": step + 1,
            "loss": round(loss.item(), 4),
            "lr": round(lr_at(step), 6),
            "grad_norm": round(gnorm, 3),
            "elapsed_s": round(time.time() - t0, 1),
        }
        if (step + 1) % 50 == 0 or step + 1 == args.steps:
            rec["eval_ppl"] = round(perplexity(model, eval_ids, args.seq), 2)
            print(json.dumps(rec), flush=True)
        log.append(rec)

    final_ppl = perplexity(model, eval_ids, args.seq)
    summary = {
        "params": n_params,
        "eval_ppl": round(final_ppl, 2),
        "unigram_ppl": round(unigram, 2),
        "train_tokens": len(train_ids),
        "eval_tokens": len(eval_ids),
        "train_docs": [d.id for d in train_docs],
        "eval_docs": [d.id for d in eval_docs],
        "seconds": round(time.time() - t0, 1),
        "torch": torch.__version__,
    }
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_docs")}), flush=True)
    if not final_ppl < 0.5 * unigram:
        print(
            f"held-out perplexity {final_ppl:.1f} is not clearly below the unigram baseline {unigram:.1f}",
            file=sys.stderr,
        )
        return 1

    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-llama-", dir=args.output.parent))
    model.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    cfg_out = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (tmp / "train_config.json").write_text(json.dumps({"args": cfg_out, "summary": summary}, indent=2) + "\n")
    (tmp / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    if args.output.exists():
        shutil.rmtree(args.output)
    tmp.rename(args.output)
    print(f"wrote {args.output} ({(args.output / 'model.safetensors').stat().st_size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
