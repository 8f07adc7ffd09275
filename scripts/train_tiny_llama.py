"""Build the bundled `tiny-llama` with edgellm itself, then publish it into the package.

    .venv/bin/python scripts/train_tiny_llama.py            # or: make tiny-llama (~15 minutes on 2 cores)
    .venv/bin/python scripts/train_tiny_llama.py --check-only -o /tmp/tl   # build elsewhere, do not publish

Runs recipes/tiny-llama.yaml (the bundled text cleaned by the data front end, then the trainer from
scratch), checks the result (held-out perplexity under half the unigram baseline, weights <= 25 MB) and
replaces edgellm/models/bundled_models/tiny-llama atomically with the model, its tokenizer, the training
log, the summary, the document split and the lineage.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "edgellm" / "models" / "bundled_models" / "tiny-llama"
MAX_BYTES = 25 * 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "edgellm-out" / "tiny-llama")
    ap.add_argument("--check-only", action="store_true", help="build and check, do not publish")
    args = ap.parse_args()

    from edgellm.pipeline import run_recipe
    from edgellm.utils.fs import atomic_dir

    summary = run_recipe(ROOT / "recipes" / "tiny-llama.yaml", output=args.output, log=print)
    train_dir = args.output / "train"
    model = Path(summary["results"]["train"]["model"])
    s = json.loads((train_dir / "train_summary.json").read_text())
    ppl, unigram = s["final"]["eval_ppl"], s["unigram_ppl"]
    size = (model / "model.safetensors").stat().st_size
    print(json.dumps({"eval_ppl": ppl, "unigram_ppl": unigram, "bytes": size, "seconds": s["seconds"]}))
    if not ppl < 0.5 * unigram:
        print(
            f"held-out perplexity {ppl:.1f} is not under half the unigram baseline {unigram:.1f}",
            file=sys.stderr,
        )
        return 1
    if size > MAX_BYTES:
        print(f"model.safetensors is {size / 2**20:.1f} MB, over the 25 MB bound", file=sys.stderr)
        return 1
    if args.check_only:
        return 0
    with atomic_dir(BUNDLED, force=True) as tmp:
        for f in model.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        for name in ("train_log.jsonl", "train_summary.json", "data_split.json"):
            shutil.copy2(train_dir / name, tmp / name)
        shutil.copy2(ROOT / "recipes" / "tiny-llama.yaml", tmp / "recipe.yaml")
    print(f"published {BUNDLED} ({size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
