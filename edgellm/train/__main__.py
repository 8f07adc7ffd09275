"""``python -m edgellm.train CONFIG.yaml [key=value ...]``: the training script ``accelerate launch`` runs.

accelerate launch --cpu --num_processes 2 -m edgellm.train train.yaml max_steps=200
"""

from __future__ import annotations

import json
import sys

import yaml

from edgellm.errors import EdgeLLMError
from edgellm.train.config import TrainConfig
from edgellm.train.loop import train


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    over = {}
    for item in argv[1:]:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: '{item}' is not key=value", file=sys.stderr)
            return 2
        over[key] = yaml.safe_load(value)
    try:
        summary = train(TrainConfig.load(argv[0], **over))
    except EdgeLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({k: summary[k] for k in ("steps", "final", "processes", "tokens_per_s")}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
