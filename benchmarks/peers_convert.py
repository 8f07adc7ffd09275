"""Run llama.cpp's ``convert_hf_to_gguf.py`` on a model whose BPE pre-tokenizer it does not know.

The converter identifies a BPE tokenizer by hashing the tokens of a fixed text and refuses any hash
missing from its table (``TextModel.get_vocab_base_pre``). edgellm's synthetic decoders carry the bundled
tiny-llama tokenizer (byte-level BPE with the GPT-2 split regex), which is in no such table. This
wrapper leaves llama.cpp's code untouched: it imports the converter's own ``conversion`` package from
the llama.cpp checkout, wraps ``get_vocab_base_pre`` so that an unknown hash yields ``--pre`` (default
``gpt-2``, llama.cpp's name for byte-level BPE with the GPT-2 split regex) instead of raising, and then runs
the unmodified script. A known hash still gets llama.cpp's own answer. Token speed does not depend on
the pre-tokenizer name (llama-bench feeds token ids).

    python benchmarks/peers_convert.py --llama-dir .peers/llama.cpp --pre gpt-2 -- \\
        /work/models/qwen05 --outtype f32 --outfile qwen05-f32.gguf
"""

from __future__ import annotations

import argparse
import logging
import runpy
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Patch the pre-tokenizer lookup and run ``convert_hf_to_gguf.py`` with the arguments after ``--``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--llama-dir", type=Path, required=True, help="llama.cpp source tree (has convert_hf_to_gguf.py)"
    )
    ap.add_argument("--pre", default="gpt-2", help="pre-tokenizer name written for an unknown BPE hash")
    ap.add_argument("convert_args", nargs=argparse.REMAINDER, help="-- then the converter's own arguments")
    args = ap.parse_args(argv)
    rest = args.convert_args[1:] if args.convert_args[:1] == ["--"] else args.convert_args
    script = args.llama_dir / "convert_hf_to_gguf.py"
    if not script.is_file():
        print(f"error: {script} not found (is --llama-dir a llama.cpp source tree?)", file=sys.stderr)
        return 2
    sys.path[:0] = [str(args.llama_dir.resolve()), str((args.llama_dir / "gguf-py").resolve())]

    import conversion.base as base  # llama.cpp's converter package, from the checkout above

    original = base.TextModel.get_vocab_base_pre
    log = logging.getLogger("peers_convert")

    def get_vocab_base_pre(self: object, tokenizer: object) -> str:
        quiet = logging.getLogger("hf-to-gguf")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # the refusal's banner; we answer it below
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            log.warning("unknown BPE pre-tokenizer hash: writing tokenizer.ggml.pre=%r", args.pre)
            return args.pre
        finally:
            quiet.setLevel(level)

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre  # type: ignore[method-assign]
    sys.argv = [str(script), *rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(main())
