"""Source text for the labelled corpora (``data_labelled.py``): paragraphs of local, installed text, split
into a *tune* and a *held-out* side that share no text.

- tune: CPython's ``pydoc_data.topics`` (the help topics), and the docstrings of ``TUNE_MODULES``;
- held-out: the docstrings of ``HELDOUT_MODULES`` (a disjoint list), and for the legal domain the Python
  ``LICENSE.txt`` plus the ``LEGAL_FILES`` found under ``/usr/share/common-licenses`` (Debian's base-files).

The fixed text of each split (web boilerplate, record templates, the held-out PII sentences, spam lines)
is at the end of this file, one set per split. A package name covers its submodules. Docstring paragraphs with code (a line indented or starting with
``>>>``), fewer than 8 words, fewer than half alphabetic words, or a trailing ``:`` (code
follows) are left out. Any tune paragraph holding a
sentence (6 words or more) that is also in the held-out text is left out, so the two sides share none.
Everything is read in sorted order: the pools are the same on every run of the same Python.

Example:
    >>> pool = paragraphs("docs", "heldout")         # doctest: +SKIP
    >>> pool[0]                                     # doctest: +SKIP
    ('argparse', 'Command-line parsing library ...')
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import re
import sysconfig
import warnings
from pathlib import Path

HELDOUT_MODULES = (
    "argparse", "base64", "binascii", "bz2", "calendar", "cmd", "colorsys", "concurrent", "configparser",
    "copy", "csv", "datetime", "dbm", "decimal", "difflib", "email", "filecmp", "fileinput", "fnmatch",
    "fractions", "ftplib", "getopt", "getpass", "gettext", "glob", "graphlib", "gzip", "hashlib", "heapq",
    "hmac", "html", "http", "imaplib", "ipaddress", "json", "locale", "lzma", "mailbox", "mimetypes",
    "multiprocessing", "netrc", "optparse", "pathlib", "pickle", "plistlib", "poplib", "pprint", "queue",
    "quopri", "random", "sched", "secrets", "shelve", "shlex", "shutil", "smtplib", "socketserver",
    "sqlite3", "ssl", "stat", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile",
    "textwrap", "tomllib", "unittest", "urllib", "uuid", "wave", "webbrowser", "wsgiref", "xml", "xmlrpc",
    "zipfile", "zlib", "zoneinfo",
)  # fmt: skip
TUNE_MODULES = (
    "abc", "array", "ast", "asyncio", "atexit", "bdb", "builtins", "cProfile", "cmath", "code", "codecs",
    "codeop", "collections", "compileall", "contextlib", "copyreg", "ctypes", "curses", "dataclasses",
    "dis", "doctest", "enum", "errno", "faulthandler", "fcntl", "functools", "gc", "genericpath", "grp",
    "importlib", "inspect", "io", "itertools", "keyword", "linecache", "logging", "marshal", "math", "mmap",
    "modulefinder", "numbers", "opcode", "operator", "os", "pdb", "pkgutil", "platform", "posix",
    "posixpath", "profile", "pstats", "pty", "pwd", "py_compile", "pyclbr", "pydoc", "re", "readline",
    "reprlib", "rlcompleter", "runpy", "select", "selectors", "signal", "site", "socket", "symtable", "sys",
    "sysconfig", "tabnanny", "termios", "threading", "time", "timeit", "token", "tokenize", "trace",
    "traceback", "tracemalloc", "types", "typing", "unicodedata", "warnings", "weakref", "zipimport",
)  # fmt: skip
# one text of each license family (GPL-2 and GPL-3, or GFDL-1.2 and 1.3, share whole sentences)
LEGAL_FILES = ("Apache-2.0", "Artistic", "BSD", "CC0-1.0", "GFDL-1.3", "GPL-3", "LGPL-2.1", "MPL-2.0")
LEGAL_DIR = Path("/usr/share/common-licenses")

_SENT = re.compile(r"(?<=[.!?])\s+")


def sentence_keys(text: str, min_words: int = 6) -> set[str]:
    """The sentences of ``text`` of ``min_words`` or more, lower-cased with whitespace collapsed."""
    flat = " ".join(text.split()).lower()
    return {s for s in _SENT.split(flat) if len(s.split()) >= min_words}


def _submodules(names: tuple[str, ...]) -> list[str]:
    out = []
    for name in names:
        try:
            mod = importlib.import_module(name)
        except Exception:  # not on this platform
            continue
        out.append(name)
        for info in pkgutil.walk_packages(getattr(mod, "__path__", []), name + "."):
            if not any(p in info.name for p in (".test", "__main__", "windows", "_win32", "wintypes")):
                out.append(info.name)
    return sorted(out)


def _owners(mod, name: str):
    yield mod
    for k, v in sorted(vars(mod).items()):
        if k.startswith("__") or getattr(v, "__module__", None) != name:
            continue
        if inspect.isclass(v):
            yield v
            for k2, v2 in sorted(vars(v).items()):
                if not k2.startswith("__") and (
                    inspect.isfunction(v2) or inspect.ismethoddescriptor(v2) or isinstance(v2, property)
                ):
                    yield v2
        elif inspect.isfunction(v) or inspect.isbuiltin(v):
            yield v


def _prose(p: str) -> bool:
    words = p.split()
    if len(words) < 8 or p.endswith(":") or any(ln.startswith((" ", "\t", ">>>")) for ln in p.splitlines()):
        return False
    return sum(any(c.isalpha() for c in w) for w in words) / len(words) >= 0.5


@functools.lru_cache(maxsize=4)
def docstrings(side: str) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """``(paragraphs, first_lines)`` of the docstrings of one side's modules, each ``(module, text)``."""
    names = HELDOUT_MODULES if side == "heldout" else TUNE_MODULES
    paras: list[tuple[str, str]] = []
    firsts: list[tuple[str, str]] = []
    known: set[str] = set()  # a paragraph copied into another docstring is kept once (first lines too)
    known_first: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _submodules(names):
            try:
                mod = importlib.import_module(name)
            except Exception:
                continue
            seen: set[str] = set()
            for o in _owners(mod, name):
                d = o.__doc__ if isinstance(o, property) else inspect.getdoc(o)
                if not isinstance(d, str) or d in seen:
                    continue
                seen.add(d)
                d = inspect.cleandoc(d)
                qual = getattr(o, "__qualname__", None) or getattr(o, "__name__", name)
                first = d.split("\n\n")[0].replace("\n", " ").strip()
                if (
                    o is not mod
                    and 3 <= len(first.split()) <= 30
                    and first[0].isupper()
                    and first not in known_first
                ):
                    known_first.add(first)
                    firsts.append((f"{name}.{qual}" if qual != name else name, first))
                for p in (p.strip() for p in re.split(r"\n\s*\n", d)):
                    if _prose(p) and p not in known:
                        known.add(p)
                        paras.append((name, p))
    return tuple(paras), tuple(firsts)


@functools.lru_cache(maxsize=1)
def _heldout_keys() -> frozenset[str]:
    paras, firsts = docstrings("heldout")
    keys: set[str] = set()
    for _, p in (*paras, *firsts):
        keys |= sentence_keys(p)
    for _, s in legal():
        keys |= sentence_keys(s)
    return frozenset(keys)


def _pydoc() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    out = []
    for name in sorted(topics):
        for p in re.split(r"\n\s*\n", topics[name]):
            p = p.strip("\n")
            if _prose(p) and not set(p.splitlines()[-1].strip()) <= set("*=-~^"):
                out.append((f"pydoc:{name}", p))
    return out


@functools.lru_cache(maxsize=8)
def paragraphs(domain: str, side: str) -> tuple[tuple[str, str], ...]:
    """Prose paragraphs ``(source, text)`` for ``docs``/``web`` (docstrings; tune adds the help topics)."""
    paras, _ = docstrings(side)
    if side == "heldout":
        return paras
    keys = _heldout_keys()
    return tuple(p for p in (*_pydoc(), *paras) if not sentence_keys(p[1]) & keys)


@functools.lru_cache(maxsize=2)
def first_lines(side: str) -> tuple[tuple[str, str], ...]:
    """``(qualified name, first docstring line)`` of one side's functions and classes."""
    _, firsts = docstrings(side)
    if side == "heldout":
        return firsts
    keys = _heldout_keys()
    return tuple(f for f in firsts if not sentence_keys(f[1]) & keys)


@functools.lru_cache(maxsize=1)
def legal() -> tuple[tuple[str, str], ...]:
    """Sentences ``(file, sentence)`` of the license texts (held-out only), each sentence once."""
    files = [Path(sysconfig.get_path("stdlib")) / "LICENSE.txt"] + [LEGAL_DIR / n for n in LEGAL_FILES]
    seen: set[str] = set()
    out = []
    for f in files:
        if not f.is_file():
            continue
        for p in re.split(r"\n\s*\n", f.read_text(encoding="utf-8", errors="replace")):
            words = [w for w in p.split() if w.strip("*=-")]  # MPL's box of asterisks
            if len(words) < 8 or sum(w.isalpha() for w in words) / len(words) < 0.6:
                continue  # headings, the release table, separators
            for s in _SENT.split(" ".join(words)):
                key = s.lower()
                if len(s.split()) >= 5 and key not in seen:
                    seen.add(key)
                    out.append((f"license:{f.name}", s))
    return tuple(out)


# -- fixed text of each split (boilerplate, record templates, PII sentences, spam) ----------------------
SITES = {
    "tune": (
        ["Home | Docs | Blog | About | Contact", "Products | Pricing | Support | Sign in", "Menu Search Login"],
        ["We use cookies to improve your experience. Accept all", "This site uses cookies. Learn more"],
        ["Copyright 2024 Example Inc. All rights reserved.", "Privacy Policy | Terms of Use | Sitemap"],
        ["DevNotes", "Example Docs", "CodeBase Wiki"],
    ),
    "heldout": (
        ["Start > Guides > Reference", "Overview · Tutorials · API · Community · Download", "Skip to content"],
        ["By continuing to browse you agree to our use of cookies. OK", "Cookie settings: necessary only"],
        ["© 2023 Northwind Labs GmbH · Imprint · Data protection", "Follow us: Mastodon · GitHub · RSS"],
        ["Northwind Labs", "PyCorner", "The Stack Journal"],
    ),
}  # fmt: skip

RECORDS = {
    "tune": (
        "Explain what {name} does.", "What does {name} return?", "{first}", "Q: What is {name} for? A: {first}",
        "Answer: {number}", "Write a Python function that does this: {first}",
    ),
    "heldout": (
        "How do I use {name} in a script?", "Give an example of {name}.", "{name}: {first}",
        "In one line: {first}", "The result is {number}.", "Summarise the {module} module in one sentence.",
        "Translate to French: {first}", "Is {name} safe to call twice? Yes. {first}",
    ),
}  # fmt: skip

HELDOUT_TEMPLATES = {
    "email": ["Please contact {} for the beta invite.", "Reports go to {} every Monday."],
    "phone": ["Our support line is {} on weekdays.", "Text {} if the build breaks."],
    "cn_id": ["Her ID card number {} was on the form.", "Passenger identity: {}."],
    "credit_card": ["Charge it to {} please.", "The card on file is {} until May."],
    "ipv4": ["The database listens on {} only.", "Block requests coming from {} now."],
    "ipv6": ["The gateway is reachable at {} over IPv6.", "Pin the peer {} in the config."],
}

SPAM = {
    "tune": ["BUY NOW cheap pills best price", "click here to win a free prize today", "subscribe and share and like"],
    "heldout": ["LIMITED OFFER act now while stocks last", "you have been selected for a reward", "hot singles in your area"],
}  # fmt: skip

LOREM = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do", "eiusmod",
         "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua"]  # fmt: skip

NAV = ["Home", "About us", "Products", "Pricing", "Blog", "Careers", "Contact", "Login", "Register", "Help",
       "FAQ", "Shop", "Cart", "Search", "Menu", "Next »", "« Previous", "Top", "Share", "Tweet"]  # fmt: skip

KEYWORDS = [["cheap", "flights", "london", "deals", "best", "book"], ["buy", "laptop", "discount", "2024", "online", "sale"],
            ["seo", "agency", "ranking", "google", "top", "expert"]]  # fmt: skip

SUBS = ["altered", "changed", "other", "new", "given", "whole", "simple", "first", "later", "usual"]
