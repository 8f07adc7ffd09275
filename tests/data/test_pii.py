"""PII detection with validation (checksums, Luhn, address parsing), and the three actions."""

import pytest

from edgellm.data.pii import PiiScanner, cn_id_valid, luhn_valid
from edgellm.errors import EdgeLLMError


def make_cn_id(prefix17: str) -> str:
    w = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return prefix17 + "10X98765432"[sum(int(c) * k for c, k in zip(prefix17, w)) % 11]


@pytest.mark.parametrize(
    "text,kind",
    [
        ("write to jane.doe+news@mail.example.org today", "email"),
        ("call +44 20 7946 0958 now", "phone"),
        ("call +1-415-555-0132 now", "phone"),
        ("手机 13912345678 联系", "phone"),
        ("or +86 13912345678.", "phone"),
        (f"id {make_cn_id('11010519491231002')} ok", "cn_id"),
        ("card 4111 1111 1111 1111 expires", "credit_card"),
        ("card 5500-0000-0000-0004 expires", "credit_card"),
        ("host 10.0.12.7.", "ipv4"),
        ("host 2001:db8:85a3::8a2e:370:7334 up", "ipv6"),
    ],
)
def test_each_type_is_found_and_masked(text, kind):
    out, counts = PiiScanner().apply(text)
    assert counts == {kind: 1}, (text, counts)
    assert f"[{kind.upper()}]" in out


@pytest.mark.parametrize(
    "text",
    [
        "version 1.2.3.4.5 of the tool",  # not an IPv4 address
        "octets 300.1.2.3 are too big",
        "card 4111 1111 1111 1112 fails Luhn",
        "id 110105194912310021 has a wrong checksum",
        "std::vector and a::b are code",
        "the year 2024 and 12345 items",
        "phone 1234567 is too short",
    ],
)
def test_lookalikes_are_left_alone(text):
    out, counts = PiiScanner().apply(text)
    assert not counts and out == text


def test_validators():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    good = make_cn_id("44030419900101123")
    assert cn_id_valid(good) and not cn_id_valid(good[:-1] + ("0" if good[-1] != "0" else "1"))
    assert not cn_id_valid(make_cn_id("44030418000101123"))  # born in 1800: implausible


def test_hash_tokens_are_consistent_salted_and_irreversible():
    a = PiiScanner(action="hash", salt="s1")
    b = PiiScanner(action="hash", salt="s2")
    t1, _ = a.apply("mail x@y.com and x@y.com, then z@y.com")
    tokens = [w.strip(",") for w in t1.split() if w.startswith("<EMAIL:")]
    assert tokens[0] == tokens[1] != tokens[2]  # same value, same token within the dataset
    assert "x@y.com" not in t1 and b.apply("x@y.com")[0] != a.apply("x@y.com")[0]  # the salt matters
    with pytest.raises(EdgeLLMError, match="salt"):
        PiiScanner(action="hash")


def test_drop_action_and_user_patterns():
    sc = PiiScanner(action="drop", patterns={"employee_id": r"EMP-\d{6}"})
    assert sc.apply("badge EMP-123456 seen")[0] is None
    assert sc.apply("nothing personal")[0] == "nothing personal"
    out, c = PiiScanner(patterns={"employee_id": r"EMP-\d{6}"}).apply("badge EMP-123456")
    assert out == "badge [EMPLOYEE_ID]" and c == {"employee_id": 1}
    with pytest.raises(EdgeLLMError, match="not a valid regex"):
        PiiScanner(patterns={"x": "("})
