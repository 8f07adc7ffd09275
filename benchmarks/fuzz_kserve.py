"""A longer fuzz of the KServe v2 parsers than ``make test`` runs: REST JSON, the binary tensor extension
and gRPC ``ModelInferRequest`` (the strategies and the property are ``tests/kserve_fuzz.py``'s).

    .venv/bin/python benchmarks/fuzz_kserve.py --examples 20000

Every generated request must be taken whole and valid (every input with the model's dtype and rank, ids
inside the vocabulary, sequences within the positions, floats finite) or refused with a 4xx that names the
problem; any other exception fails the run (exit 1) with the shrunk example. Random seeds each run (unlike
the test, which is derandomized). Prints JSON: per parser the examples, how many were taken, the refusals
by status, the seconds, and any failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=20000, help="examples per parser")
    ap.add_argument("--output", type=Path, default=Path("edgellm-out/fuzz_kserve.json"))
    args = ap.parse_args()

    from hypothesis import HealthCheck, given, settings
    from kserve_fuzz import check_grpc, check_rest, grpc_cases, rest_cases

    from edgellm.bench.report import write_json

    cfg = settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    report: dict = {"examples_per_parser": args.examples, "parsers": {}}
    ok = True
    for parser, strategy, check in (
        ("rest", rest_cases, lambda case: check_rest(case[0], *case[1])),
        ("grpc", grpc_cases, lambda case: check_grpc(*case)),
    ):
        seen: Counter = Counter()
        run = _property(cfg, given(strategy), check, seen)
        t0 = time.perf_counter()
        failure = None
        try:
            run()
        except Exception as exc:  # the property broke: hypothesis has shrunk and printed the example
            failure, ok = f"{type(exc).__name__}: {exc}"[:2000], False
        report["parsers"][parser] = {
            "examples": sum(seen.values()),
            "taken": seen.pop("taken", 0),
            "refused": dict(sorted(seen.items())),
            "seconds": round(time.perf_counter() - t0, 1),
            "failure": failure,
        }
    print(json.dumps(report, indent=2))
    write_json(report, args.output)
    return 0 if ok else 1


def _property(cfg, given_strategy, check, seen: Counter):
    """The hypothesis test: check one case, count its outcome."""

    @cfg
    @given_strategy
    def run(case):
        seen[str(check(case))] += 1

    return run


if __name__ == "__main__":
    sys.exit(main())
