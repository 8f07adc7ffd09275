"""PII: detect structured personal data in text and mask it, drop the document, or replace it with a
salted hash token.

Detected types (each with validation beyond the pattern, so numbers that only look like PII pass):

- ``email``;
- ``phone``: international numbers written with a leading ``+`` and country code; North American
  numbers written ``(415) 555-2671`` (area code and exchange starting 2-9); and Chinese mobile numbers
  (11 digits, ``1[3-9]``, optionally ``+86``/``86``, also grouped 3-4-4 as ``138-0013-8000`` or
  ``138 0013 8000``);
- ``cn_id``: Chinese resident identity numbers, 18 characters, the last a checksum (ISO 7064 MOD 11-2)
  and a plausible birth date;
- ``credit_card``: 13-19 digits, optionally grouped by spaces or hyphens, passing the Luhn check;
- ``ipv4`` / ``ipv6``: validated by :mod:`ipaddress`; a dotted quad right after ``version``, ``release``,
  ``build`` or ``v`` (``version 2.0.0.1``, ``v1.2.3.4``) is a version number, not an address;
- any user pattern (``{"employee_id": r"EMP-\\d{6}"}``).

Full-width forms (``１３８００１３８０００``, ``ｊａｎｅ＠ｅｘａｍｐｌｅ．ｏｒｇ``) are found as their ASCII
twins are, whether or not a ``normalize`` step ran first: the scan reads the text through a
length-preserving fold (full-width ASCII -> ASCII, ideographic space -> space), and a hash token is
that of the folded value, so both spellings of a value share one token.

Actions: ``mask`` (``[EMAIL]``), ``drop`` (the document), ``hash`` (``<EMAIL:3f9a1c0b2d4e>``: HMAC-SHA256 of
the value under the salt, so the same value gives the same token within a dataset and cannot be reversed
without the salt). Reports only ever count entities by type; values never reach logs.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgellm.errors import EdgeLLMError

ACTIONS = ("mask", "drop", "hash")

_EMAIL = r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}(?![\w-])"
# not inside a token of letters and digits (a UPS tracking number 1ZC5T5B19161337463)
_CN_MOBILE = r"(?<![\dA-Za-z+])(?:\+?86[ -]?)?1[3-9]\d{9}(?!\d)"
# 3-4-4 with one separator throughout, not inside a longer run of digit groups nor after '#' (a number)
_CN_MOBILE_GROUPED = (
    r"(?<![\dA-Za-z+#-])(?:\+?86[ -]?)?1[3-9]\d(?P<cn_sep>[ -])\d{4}(?P=cn_sep)\d{4}(?!\d|[ -]\d)"
)
# North American Numbering Plan, the parenthesised area code: (NXX) NXX-XXXX
_NANP = r"(?<![\w(+#$])\([2-9]\d{2}\) ?[2-9]\d{2}[-. ]\d{4}(?!\d|[-.]\d)"
_INTL_PHONE = r"(?<![\w+])\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\d)"
_CN_ID = r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])"
_CARD = r"(?<![\d+-])(?:\d[ -]?){12,18}\d(?![\d-])"
_IPV4 = r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)"
_IPV6 = r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:]|\.\w)"

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def cn_id_valid(s: str) -> bool:
    """ISO 7064 MOD 11-2 checksum and a plausible birth date (YYYYMMDD at positions 7-14)."""
    if len(s) != 18 or not s[:17].isdigit():
        return False
    total = sum(int(c) * w for c, w in zip(s[:17], _ID_WEIGHTS))
    if _ID_CHECK[total % 11] != s[17].upper():
        return False
    y, m, d = int(s[6:10]), int(s[10:12]), int(s[12:14])
    return 1900 <= y <= 2100 and 1 <= m <= 12 and 1 <= d <= 31


def luhn_valid(digits: str) -> bool:
    total, alt = 0, False
    for c in reversed(digits):
        n = int(c)
        if alt:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
        alt = not alt
    return total % 10 == 0


# issuer prefixes (IIN ranges) and the lengths their cards have
_IIN = (
    (("4",), (13, 16, 19)),  # Visa
    (tuple(str(p) for p in range(51, 56)) + tuple(str(p) for p in range(2221, 2721)), (16,)),  # Mastercard
    (("34", "37"), (15,)),  # American Express
    (("6011", "65", *tuple(str(p) for p in range(644, 650))), (16, 17, 18, 19)),  # Discover
    (tuple(str(p) for p in range(3528, 3590)), (16, 17, 18, 19)),  # JCB
    (("62",), (16, 17, 18, 19)),  # UnionPay
    (("36", "38", "39", *tuple(str(p) for p in range(300, 306))), (14, 15, 16, 17, 18, 19)),  # Diners
)


def _card(v: str) -> bool:
    """Luhn, and a length that an issuer with that prefix uses: numbers that only pass Luhn (one in ten
    random digit strings does) are not cards."""
    d = re.sub(r"[ -]", "", v)
    if not (13 <= len(d) <= 19 and luhn_valid(d) and len(set(d)) > 1):
        return False
    return any(d.startswith(prefixes) and len(d) in lengths for prefixes, lengths in _IIN)


# a dotted quad right after one of these words is a version number, not an address: "version 2.0.0.1",
# "release 1.2.3.4", "build: 10.0.0.12", "v1.2.3.4" (the text before the match, case-insensitive)
_VERSION_BEFORE = re.compile(
    r"(?:\b(?:versions?|releases?|build|ver)\.?[ \t]*[:=#]?[ \t]*|\bv\.?)$", re.IGNORECASE
)


def _ipv4(v: str) -> bool:
    try:
        ipaddress.IPv4Address(v)
    except ValueError:
        return False
    return True


def _ipv6(v: str) -> bool:
    if v.count(":") < 2 or not any(c.isdigit() for c in v):  # "a::b" is valid but reads as code
        return False
    try:
        ipaddress.IPv6Address(v)
    except ValueError:
        return False
    return True


_NATIONAL_PHONE = re.compile(f"{_CN_MOBILE}|{_CN_MOBILE_GROUPED}|{_NANP}")


def _phone(v: str) -> bool:
    """A national number of a form above, or an international one of 8..15 digits (E.164)."""
    return bool(_NATIONAL_PHONE.fullmatch(v)) or 8 <= len(re.sub(r"\D", "", v)) <= 15


# full-width ASCII (U+FF01..U+FF5E) -> ASCII, ideographic space -> space: one character for one, so the
# spans found in the folded text are the spans of the original
_FOLD = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


# type -> a test on the text before a match that makes it not that type
_NOT_AFTER: dict[str, re.Pattern] = {"ipv4": _VERSION_BEFORE}

# type -> (pattern, validator); order matters: earlier types claim their spans first
BUILTIN: dict[str, tuple[str, Callable[[str], bool] | None]] = {
    "email": (_EMAIL, None),
    "cn_id": (_CN_ID, cn_id_valid),
    "phone": (f"{_CN_MOBILE}|{_CN_MOBILE_GROUPED}|{_NANP}|{_INTL_PHONE}", _phone),
    "credit_card": (_CARD, _card),
    "ipv6": (_IPV6, _ipv6),
    "ipv4": (_IPV4, _ipv4),
}


@dataclass
class PiiScanner:
    """Find PII spans and apply an action.

    Args:
        types: built-in types to detect (default: all).
        patterns: extra ``{type: regex}`` (user patterns), masked like the built-ins.
        action: ``mask``, ``drop`` or ``hash``.
        salt: secret for ``hash`` (required there; keep it out of the dataset and the repo).
    """

    types: tuple[str, ...] = tuple(BUILTIN)
    patterns: dict[str, str] = field(default_factory=dict)
    action: str = "mask"
    salt: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise EdgeLLMError(
                f"PII action '{self.action}' is not one of {', '.join(ACTIONS)}", "use mask, drop or hash"
            )
        unknown = [t for t in self.types if t not in BUILTIN]
        if unknown:
            raise EdgeLLMError(f"unknown PII type '{unknown[0]}'", f"built-in types: {', '.join(BUILTIN)}")
        if self.action == "hash" and not self.salt:
            raise EdgeLLMError(
                "PII action 'hash' needs a salt",
                "set pii.salt_env to an environment variable holding a secret salt (never commit the salt)",
            )
        self._rules: list[tuple[str, re.Pattern, Callable[[str], bool] | None]] = []
        for t in self.types:
            pat, check = BUILTIN[t]
            self._rules.append((t, re.compile(pat), check))
        for t, pat in self.patterns.items():
            try:
                self._rules.append((t, re.compile(pat), None))
            except re.error as exc:
                raise EdgeLLMError(
                    f"PII pattern '{t}' is not a valid regex: {exc}", "fix the pattern"
                ) from exc
        self._key = (self.salt or "").encode()

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping ``(start, end, type)`` spans, earlier rules first (full-width forms included)."""
        folded = text.translate(_FOLD)
        n_builtin = len(self.types)
        spans: list[tuple[int, int, str]] = []
        taken: list[tuple[int, int]] = []
        for k, (t, rx, check) in enumerate(self._rules):
            # built-in types read the folded text; a user pattern both (it may spell full-width itself)
            texts = (folded,) if k < n_builtin or folded == text else (folded, text)
            for m in (m for x in texts for m in rx.finditer(x)):
                s, e = m.span()
                v = m.group(0)
                if check is not None and not check(v):
                    continue
                if k < n_builtin and t in _NOT_AFTER and _NOT_AFTER[t].search(folded[max(0, s - 16) : s]):
                    continue  # a version number, not an address
                if any(s < te and ts < e for ts, te in taken):
                    continue
                spans.append((s, e, t))
                taken.append((s, e))
        return sorted(spans)

    def token(self, kind: str, value: str) -> str:
        if self.action == "hash":
            digest = hmac.new(self._key, value.translate(_FOLD).encode(), hashlib.sha256).hexdigest()[:12]
            return f"<{kind.upper()}:{digest}>"
        return f"[{kind.upper()}]"

    def apply(self, text: str) -> tuple[str | None, Counter]:
        """The text with PII replaced (None when the action drops the document) and counts by type."""
        spans = self.find(text)
        counts = Counter(t for _, _, t in spans)
        if not spans:
            return text, counts
        if self.action == "drop":
            return None, counts
        out, last = [], 0
        for s, e, t in spans:
            out.append(text[last:s])
            out.append(self.token(t, text[s:e]))
            last = e
        out.append(text[last:])
        return "".join(out), counts

    def scan(self, value: Any) -> tuple[Any, Counter]:
        """``value`` as a record field holds it (a string, or lists and mappings of them, other values
        passed through) with PII replaced in every string, and the counts by type. Under ``drop`` nothing
        is replaced: the caller drops the record when the counts are not empty."""
        if isinstance(value, str):
            if self.action == "drop":
                return value, Counter(t for _, _, t in self.find(value))
            return self.apply(value)
        counts: Counter = Counter()
        if isinstance(value, list):
            out = []
            for v in value:
                new, c = self.scan(v)
                out.append(new)
                counts.update(c)
            return out, counts
        if isinstance(value, dict):
            res = {}
            for k, v in value.items():
                res[k], c = self.scan(v)
                counts.update(c)
            return res, counts
        return value, counts


def holds_string(value: Any) -> bool:
    """A non-empty string, or a list or mapping holding one (what a PII scan could find something in)."""
    if isinstance(value, str):
        return bool(value)
    if isinstance(value, list):
        return any(holds_string(v) for v in value)
    if isinstance(value, dict):
        return any(holds_string(v) for v in value.values())
    return False
