"""PII detection with validation (checksums, Luhn, address parsing), and the three actions."""

import json

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
        "tracking number 1ZC5T5B19161337463 is in transit",  # digits after a letter: not a mobile number
    ],
)
def test_lookalikes_are_left_alone(text):
    out, counts = PiiScanner().apply(text)
    assert not counts and out == text


@pytest.mark.parametrize(
    "text",
    [
        "upgrade to version 2.0.0.1 today",
        "Release 1.2.3.4 fixed it",
        "built from v1.2.3.4 last night",
        "Windows build: 10.0.0.12 is needed",
        "VERSION=4.2.0.1",
    ],
)
def test_a_four_part_version_is_not_an_ipv4_address(text):
    out, counts = PiiScanner().apply(text)
    assert not counts and out == text


@pytest.mark.parametrize(
    "text", ["the server 10.0.0.1 runs version 2", "dev 1.2.3.4 is up", "conversion 1.2.3.4 failed"]
)
def test_an_address_after_other_words_is_still_found(text):
    out, counts = PiiScanner().apply(text)
    assert counts == {"ipv4": 1} and "[IPV4]" in out


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


def full_width(s: str) -> str:
    """ASCII digits and letters as their full-width forms (what CJK input methods type)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in s)


@pytest.mark.parametrize(
    "text,kind",
    [
        ("call (415) 555-2671 today", "phone"),
        ("call (415)555-2671.", "phone"),
        ("手机 138-0013-8000 联系", "phone"),
        ("手机 138 0013 8000 联系", "phone"),
        ("or +86 138-0013-8000.", "phone"),
        (f"身份证 {full_width(make_cn_id('11010519491231002'))} 号", "cn_id"),
        (f"身份证 {full_width(make_cn_id('44030419900101123'))}", "cn_id"),
        (f"手机 {full_width('13912345678')}", "phone"),
        (f"mail {full_width('jane')}＠example.org", "email"),
    ],
)
def test_new_phone_forms_and_full_width_digits_are_found_without_normalize(text, kind):
    out, counts = PiiScanner().apply(text)
    assert counts == {kind: 1}, (text, counts)
    assert f"[{kind.upper()}]" in out


def test_full_width_id_hashes_like_its_ascii_twin():
    sc = PiiScanner(action="hash", salt="s")
    ident = make_cn_id("11010519491231002")
    assert sc.apply(ident)[0] == sc.apply(full_width(ident))[0].strip()


@pytest.mark.parametrize(
    "text",
    [
        "(123) 456-7890 has an area code starting with 1",
        "(415) 155-2671 has an exchange starting with 1",
        "f(415) 555-2671 is a call in code",
        "range 2024-138-0013-8000 is a longer run of groups",
        "138-0013-80001 has too many digits",
        "138-0013 8000 mixes separators",
        "isbn 978-0013-8000 is not a mobile",
        "order #138-0013-8000 is a number, not a phone",
        "SKU138-0013-8000 is a code",
        "owed $(415) 555.2671",
        "at 2024-01-15 10:30 the job ran",
        f"id {full_width('110105194912310021')} has a wrong checksum",
        f"count {full_width('12345')} items",
    ],
)
def test_new_formats_leave_lookalikes_alone(text):
    out, counts = PiiScanner().apply(text)
    assert not counts and out == text


def test_scan_reaches_strings_inside_lists_and_objects():
    sc = PiiScanner()
    out, c = sc.scan({"who": ["x@y.com", 5, None], "n": 3, "note": "call (415) 555-2671"})
    assert out == {"who": ["[EMAIL]", 5, None], "n": 3, "note": "call [PHONE]"}
    assert c == {"email": 1, "phone": 1}
    kept, c = PiiScanner(action="drop").scan(["x@y.com"])
    assert kept == ["x@y.com"] and c == {"email": 1}  # drop replaces nothing: the record goes


# -- the pii step over the fields of real records (through the cleaning pipeline) ------------------------
SECRET = "secret.author@example.net"


def records(tmp_path, name="in.jsonl", text_field="text"):
    rows = [
        {"id": "a", text_field: "a note with nothing personal", "author_email": SECRET, "title": "hello"},
        {"id": "b", text_field: "nothing here either", "author_email": None, "title": "call (415) 555-2671"},
        {"id": "c", text_field: "write to jane@example.org", "author_email": "", "title": "plain"},
        {
            "id": "d",
            text_field: "clean text",
            "title": "clean",
            "n": 4,
            "author": {"mail": "x@y.com", "age": 3},
        },
    ]
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def run_pii(tmp_path, pii, *, workers=1, text_field="text", out="out"):
    from edgellm.data.clean import CleanConfig, clean

    cfg = CleanConfig(text_field=text_field, steps=[{"pii": pii}], workers=workers)
    r = clean(records(tmp_path, text_field=text_field), tmp_path / out, cfg, force=True)
    written = (tmp_path / out / "part-00000.jsonl").read_text()
    return r, {row["id"]: row for row in map(json.loads, written.splitlines())}, written


@pytest.mark.parametrize("action,workers", [("mask", 1), ("hash", 2), ("drop", 1)])
def test_named_fields_are_scanned_under_every_action(tmp_path, monkeypatch, action, workers):
    monkeypatch.setenv("EDGELLM_PII_SALT", "a-test-salt")
    r, rows, written = run_pii(
        tmp_path, {"action": action, "fields": ["text", "author_email"]}, workers=workers
    )
    assert SECRET not in written and "jane@example.org" not in written
    assert r["pii"] == {"email": 2}
    if action == "drop":
        assert sorted(rows) == ["b", "d"]  # a (the author's email) and c (the text's) are gone
    else:
        token = (
            "[EMAIL]"
            if action == "mask"
            else PiiScanner(action="hash", salt="a-test-salt").token("email", SECRET)
        )
        assert rows["a"]["author_email"] == token and rows["a"]["text"] == "a note with nothing personal"
        assert rows["c"]["text"].startswith("write to ") and "@" not in rows["c"]["text"]
        assert rows["b"]["author_email"] is None and rows["c"]["author_email"] == ""  # kept as they were
        assert rows["d"]["author"] == {"mail": "x@y.com", "age": 3} and rows["d"]["n"] == 4  # not named
    f = r["pii_fields"]
    assert f["scanned"] == {"author_email": 1, "text": 4}
    assert f["not_scanned"] == {"author": 1, "title": 4} and f["not_found"] == []


def test_all_strings_scans_every_field(tmp_path):
    r, rows, written = run_pii(tmp_path, {"all_strings": True})
    assert SECRET not in written and "x@y.com" not in written and "555-2671" not in written
    assert rows["b"]["title"] == "call [PHONE]" and rows["d"]["author"] == {"mail": "[EMAIL]", "age": 3}
    assert rows["d"]["n"] == 4 and rows["a"]["title"] == "hello"  # other values untouched, types kept
    assert r["pii"] == {"email": 3, "phone": 1}
    assert r["pii_fields"]["not_scanned"] == {} and set(r["pii_fields"]["scanned"]) >= {"author", "title"}


def test_the_report_names_the_fields_not_scanned(tmp_path):
    r, rows, _ = run_pii(tmp_path, {})  # the default: the text only
    assert rows["a"]["author_email"] == SECRET  # as documented, and said in the report:
    f = r["pii_fields"]
    assert f["scanned"] == {"text": 4} and f["not_scanned"] == {"author": 1, "author_email": 1, "title": 4}
    md = (tmp_path / "out" / "_report" / "report.md").read_text()
    assert "Not scanned for PII" in md and "author_email (1)" in md and "pii.all_strings" in md
    assert SECRET not in md and SECRET not in (tmp_path / "out" / "_report" / "report.json").read_text()
    # a field named by the input's name of the text; a misspelt field is reported, not ignored
    r, rows, _ = run_pii(tmp_path, {"fields": ["content", "author_mail"]}, text_field="content", out="o2")
    assert r["pii_fields"]["not_found"] == ["author_mail"] and r["pii_fields"]["scanned"] == {"text": 4}
    assert "author_email" in r["pii_fields"]["not_scanned"] and rows["c"]["text"] == "write to [EMAIL]"


def test_pii_step_options_are_checked():
    from edgellm.data.steps import parse_steps

    with pytest.raises(EdgeLLMError, match="fields"):
        parse_steps([{"pii": {"fields": []}}])
    with pytest.raises(EdgeLLMError, match="all_strings"):
        parse_steps([{"pii": {"all_strings": "sometimes"}}])


def test_user_patterns_match_full_width_text_and_full_width_patterns():
    sc = PiiScanner(patterns={"employee_id": r"EMP-\d{6}", "member": r"会員番号：\d{4}"})
    out, c = sc.apply(f"badge {full_width('EMP')}－{full_width('123456')}, 会員番号：１２３４")
    assert out == "badge [EMPLOYEE_ID], [MEMBER]" and c == {"employee_id": 1, "member": 1}
