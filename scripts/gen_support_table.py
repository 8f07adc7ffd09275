"""Write the README's support table (model family x stage) from the declaration in edgellm/models/support.py,
between the ``support-table`` markers. tests/conformance/test_family_matrix.py runs every cell of that
declaration and fails when the README's table is not this rendering.

.venv/bin/python scripts/gen_support_table.py            # rewrite the table in README.md
.venv/bin/python scripts/gen_support_table.py --check    # exit 1 if it is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- support-table:start -->", "<!-- support-table:end -->"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def render() -> str:
    """The table, its notes and the legend of the stages, as markdown (without the markers)."""
    from edgellm.models import support

    refusals: list[str] = []  # numbered notes, in order of first use
    pending: list[str] = []  # lettered notes

    def mark(c: support.Cell) -> str:
        if c.status == support.REFUSED:  # refused today too, if only because the family is pending
            if c.reason not in refusals:
                refusals.append(c.reason)
            return f"no ({refusals.index(c.reason) + 1})"
        if c.pending:
            if c.pending not in pending:
                pending.append(c.pending)
            return f"pending ({LETTERS[pending.index(c.pending)]})"
        return "yes"

    head = ["family", "kind", *(s.title for s in support.STAGES)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for family in support.FAMILY_NAMES:
        cells = [mark(support.cell(family, s.name)) for s in support.STAGES]
        lines.append("| " + " | ".join([family, support.kind(family), *cells]) + " |")
    lines.append("")
    lines += [f"- ({i + 1}) {reason}." for i, reason in enumerate(refusals)]
    lines += [f"- ({LETTERS[i]}) pending: {support.PENDING_NOTES[p]}." for i, p in enumerate(pending)]
    aliases = ", ".join(f"`{a}` as {f}" for a, f in sorted(support.ALIASES.items()))
    lines += [
        "",
        f"Also loaded: {aliases}. The stages (the matrix calls the same library verbs on a tiny random-weight "
        "model of each family, hidden 64, 2 layers, with a ~300-token tokenizer of its kind, and checks "
        "parity against torch):",
        "",
        *(f"- **{s.title}**: {s.how}" for s in support.STAGES),
        "",
        "Generated from `edgellm/models/support.py` by `scripts/gen_support_table.py`; "
        "`pytest tests/conformance/test_family_matrix.py` checks every cell (a refused cell: the stage's "
        "error names the family; a pending cell fails until its work lands).",
    ]
    return "\n".join(lines)


def replaced(text: str, table: str) -> str:
    """``text`` with the block between the markers replaced by ``table``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise SystemExit(f"README.md needs one {START} ... {END} block")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    return f"{before}{START}\n{table}\n{END}{after}"


def main(argv: list[str]) -> int:
    text = README.read_text()
    new = replaced(text, render())
    if "--check" in argv:
        if new != text:
            print("README.md's support table is stale: run .venv/bin/python scripts/gen_support_table.py")
            return 1
        return 0
    if new != text:
        README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
