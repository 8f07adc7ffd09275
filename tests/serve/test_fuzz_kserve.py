"""A short fuzz of the KServe v2 parsers (REST JSON, the binary extension, gRPC requests) in ``make test``:
every generated request is taken whole and valid, or refused with a 4xx naming the problem; never another
exception. Derandomized here, so a run is reproducible; ``benchmarks/fuzz_kserve.py`` runs longer, random.
"""

from __future__ import annotations

from collections import Counter

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="pip install 'edgellm[dev]'")
pytest.importorskip("tritonclient.grpc", reason="pip install 'edgellm[serve]'")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from kserve_fuzz import check_grpc, check_rest, grpc_cases, rest_cases  # noqa: E402

FAST = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_rest_parser_takes_or_refuses_with_4xx():
    seen: Counter = Counter()

    @FAST
    @given(rest_cases)
    def run(case):
        model, (body, header) = case
        seen[check_rest(model, body, header)] += 1

    run()
    assert seen["taken"] > 0 and seen[400] > 0  # both sides of the property were exercised


def test_grpc_parser_takes_or_refuses_with_4xx():
    seen: Counter = Counter()

    @FAST
    @given(grpc_cases)
    def run(case):
        seen[check_grpc(*case)] += 1

    run()
    assert seen["taken"] > 0 and seen[400] > 0
