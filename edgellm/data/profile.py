"""The dry run: what each quality rule would drop under each preset, and the preset that fits a corpus.

:func:`profile` runs the steps before ``quality`` (normally ``normalize``) on a sample, then every preset
on it, and records per preset and rule how many documents it drops (the first rule each fails, as
:meth:`Quality.reason <edgellm.data.quality.Quality.reason>` attributes it), with up to two examples each.
The examples pass through :class:`~edgellm.data.pii.PiiScanner` (mask) so that no PII reaches a report.
:func:`choose_preset` picks the strictest preset that drops at most ``epsilon`` of the sample beyond the
most lenient one, and :func:`resolve` writes the choice into a step spec, so that every worker process
(and every Ray task) applies the same thresholds.

Example:
    >>> texts = ["Return the sum of a and b, as a new integer object.",
    ...          "Remove and return the item at the front of the queue."] * 60
    >>> p = profile(texts, [])
    >>> choose_preset(p)[0], p["presets"]["web"]["dropped"]
    ('docs', 120)
    >>> resolve(["normalize", "quality"], texts)[0][1]
    {'quality': {'preset': 'docs'}}
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from edgellm.data.quality import PRESETS, RULES, Quality
from edgellm.data.step import Step
from edgellm.errors import EdgeLLMError

ORDER = ("web", "docs", "short")  # strictest first
EXAMPLES = 2  # per (preset, rule)
EXAMPLE_CHARS = 100


def _masker():
    from edgellm.data.pii import PiiScanner

    return PiiScanner(action="mask")


def _example(scanner: Any, doc_id: str, text: str) -> dict[str, str]:
    head = " ".join(text[: EXAMPLE_CHARS * 2].split())  # one line; masked before it is cut
    masked, _ = scanner.scan(head)
    return {"id": scanner.scan(str(doc_id))[0], "text": masked[:EXAMPLE_CHARS]}


def profile(
    texts: list[str],
    prefix: list[Step],
    presets: tuple[str, ...] = ORDER,
    *,
    ids: list[str] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What each preset's rules would drop from ``texts`` after the per-document ``prefix`` steps.

    Args:
        texts: the sample (e.g. the corpus's first 5,000 documents).
        prefix: the steps before ``quality``; stateful ones (the deduplications) are skipped, and a
            document a prefix step drops is left out of the sample.
        presets: the presets to try, strictest first.
        ids: the documents' ids (default: their positions), shown with the examples.
        options: the quality step's other keys, applied over every preset (explicit keys win).

    Returns:
        ``{"documents", "words": {p5, p25, p50, p75, p95}, "presets": {name: {"dropped", "share",
        "by_rule", "examples", "lines_removed"}}, "kept_by_all", "excess": {name: {"dropped", "share",
        "by_rule"}}}`` where ``excess`` counts what a preset drops beyond the last (most lenient) one.
    """
    ids = [str(i) for i in range(len(texts))] if ids is None else [str(i) for i in ids]
    cur: list[str | None] = list(texts)
    for step in prefix:
        if step.stateful:
            continue
        new, drop, _, _ = step.run(cur)
        cur = [None if d or t is None else t for t, d in zip(new, drop)]
    alive = [(i, t) for i, t in zip(ids, cur) if t is not None]
    opts = {k: v for k, v in (options or {}).items() if k not in ("preset", "kind")}
    scanner = _masker()
    words = np.array([len(t.split()) for _, t in alive] or [0])
    out: dict[str, Any] = {
        "documents": len(alive),
        "words": {f"p{q}": int(np.percentile(words, q)) for q in (5, 25, 50, 75, 95)},
        "presets": {},
    }
    reasons: dict[str, list[str | None]] = {}
    for name in presets:
        q = Quality(**{**opts, "preset": name})
        by_rule: Counter = Counter()
        examples: dict[str, list[dict[str, str]]] = {}
        removed = 0
        rs: list[str | None] = []
        for doc_id, text in alive:
            text, r, lines = q.check(text)
            removed += lines
            rs.append(r)
            if r is not None:
                by_rule[r] += 1
                if len(examples.setdefault(r, [])) < EXAMPLES:
                    examples[r].append(_example(scanner, doc_id, text))
        reasons[name] = rs
        n = sum(by_rule.values())
        out["presets"][name] = {
            "dropped": n,
            "share": round(n / max(len(alive), 1), 4),
            "by_rule": dict(by_rule),
            "examples": examples,
            "lines_removed": removed,
        }
    lenient = reasons[presets[-1]]
    out["kept_by_all"] = sum(all(reasons[p][j] is None for p in presets) for j in range(len(alive)))
    out["excess"] = {}
    for name in presets:
        extra = Counter(r for r, base in zip(reasons[name], lenient) if r is not None and base is None)
        n = sum(extra.values())
        out["excess"][name] = {
            "dropped": n,
            "share": round(n / max(len(alive), 1), 4),
            "by_rule": dict(extra.most_common()),
        }
    return out


def choose_preset(prof: dict[str, Any], epsilon: float = 0.02) -> tuple[str, str]:
    """The strictest preset that drops at most ``epsilon`` of the sample beyond the most lenient one.

    Dropping more than that means the strict rules do not fit this corpus's ordinary documents (they are
    short, or technical), not that the documents are junk: junk fails the lenient rules too. A web crawl
    whose sample is mostly short junk therefore gets a lenient preset; the table shows it, and naming
    ``preset: web`` is the answer. Returns ``(name, why)``.
    """
    names = list(prof["presets"])
    if not prof["documents"]:
        return names[0], f"no documents to profile: {names[0]}, the strictest"
    lenient = names[-1]
    notes = []
    for name in names:
        ex = prof["excess"][name]
        if name == lenient or ex["share"] <= epsilon:
            if name == lenient:
                last = f"{name}, the most lenient, is left"
            else:
                last = f"{name} drops {ex['share']:.1%} more (<= {epsilon:.0%})"
            return name, "; ".join([*notes, last])
        top = ", ".join(f"{r} {c}" for r, c in list(ex["by_rule"].items())[:3])
        notes.append(f"{name} would drop {ex['share']:.1%} more than {lenient} ({top})")
    raise AssertionError("unreachable")  # pragma: no cover


def quality_items(spec: list[Any]) -> list[tuple[int, dict[str, Any]]]:
    """(position, options) of the quality steps in a step spec."""
    out = []
    for i, item in enumerate(spec):
        if item == "quality":
            out.append((i, {}))
        elif isinstance(item, dict) and len(item) == 1 and "quality" in item:
            cfg = item["quality"] or {}
            if not isinstance(cfg, dict):
                raise EdgeLLMError(f"steps[{i}].quality is {cfg!r}", "write its options as a mapping")
            out.append((i, dict(cfg)))
    return out


def needs_sample(spec: list[Any]) -> bool:
    """Whether a quality step in ``spec`` has preset ``auto`` (given or by default)."""
    return any(cfg.get("preset", "auto") == "auto" for _, cfg in quality_items(spec))


def with_preset(spec: list[Any], preset: str) -> list[Any]:
    """``spec`` with every quality step's preset set to ``preset`` (the CLI's ``--preset``)."""
    if preset not in ("auto", *PRESETS):
        raise EdgeLLMError(f"unknown quality preset '{preset}'", f"presets: auto, {', '.join(PRESETS)}")
    items = dict(quality_items(spec))
    if not items:
        raise EdgeLLMError(
            "--preset was given but the steps have no quality step", "add quality to the steps"
        )
    return [{"quality": {**items[i], "preset": preset}} if i in items else s for i, s in enumerate(spec)]


def resolve(
    spec: list[Any], sample_texts: list[str], ids: list[str] | None = None, *, epsilon: float = 0.02
) -> tuple[list[Any], dict[str, Any] | None]:
    """``spec`` with each ``auto`` quality preset replaced by the one :func:`choose_preset` picks for the
    sample, and the (first) profile with ``chosen`` and ``why``; ``(spec, None)`` when nothing is auto."""
    from edgellm.data.steps import parse_steps

    out = list(spec)
    first: dict[str, Any] | None = None
    for i, cfg in quality_items(spec):
        if cfg.get("preset", "auto") != "auto":
            continue
        prof = profile(sample_texts, parse_steps(spec[:i]), ids=ids, options=cfg)
        name, why = choose_preset(prof, epsilon)
        prof.update(chosen=name, why=why)
        out[i] = {"quality": {**cfg, "preset": name}}
        first = first or prof
    return out, first


def summary(spec: list[Any], prof: dict[str, Any] | None) -> dict[str, Any] | None:
    """The report's ``quality`` entry: ``{preset, auto, why, profile}`` (None without a quality step)."""
    items = quality_items(spec)
    if not items:
        return None
    if prof is not None:
        return {"preset": prof["chosen"], "auto": True, "why": prof["why"], "profile": prof}
    preset = items[0][1].get("preset", "auto")
    return {"preset": preset, "auto": False, "why": "named in the config", "profile": None}


def profile_markdown(prof: dict[str, Any]) -> str:
    """The dry run's table: documents each rule drops under each preset, the totals, examples, the choice."""
    names = list(prof["presets"])
    n = prof["documents"]
    seen = [r for p in prof["presets"].values() for r in p["by_rule"]]
    rules = [*RULES, *dict.fromkeys(r for r in seen if r not in RULES)]
    w = prof["words"]
    lines = [
        f"Quality presets on {n} documents (words per document: p5 {w['p5']}, median {w['p50']}, "
        f"p95 {w['p95']}); each document is counted under the first rule it fails.",
        "",
        "| rule | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for r in rules:
        lines.append(
            f"| {r} | " + " | ".join(str(prof["presets"][p]["by_rule"].get(r, 0)) for p in names) + " |"
        )
    lines.append(
        "| **dropped** | "
        + " | ".join(f"{prof['presets'][p]['dropped']} ({prof['presets'][p]['share']:.1%})" for p in names)
        + " |"
    )
    lines.append(
        f"| beyond {names[-1]} | "
        + " | ".join(f"{prof['excess'][p]['dropped']} ({prof['excess'][p]['share']:.1%})" for p in names)
        + " |"
    )
    lines.append(
        "| lines removed | " + " | ".join(str(prof["presets"][p]["lines_removed"]) for p in names) + " |"
    )
    lines += ["", f"Kept by every preset: {prof['kept_by_all']} of {n}.", ""]
    ex_lines = []
    for r in rules:
        for p in names:  # the examples of the strictest preset that drops by this rule
            ex = prof["presets"][p]["examples"].get(r)
            if ex:
                shown = "; ".join(f"`{e['id']}`: {e['text'].replace('|', '/')!r}" for e in ex)
                ex_lines.append(f"- {r} ({p}): {shown}")
                break
    if ex_lines:
        lines += ["Examples (first characters, PII masked):", "", *ex_lines, ""]
    if "chosen" in prof:
        lines += [f"chosen: {prof['chosen']} ({prof['why']})", ""]
    return "\n".join(lines)
