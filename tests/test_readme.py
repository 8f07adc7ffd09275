"""The README's Python snippets run as written, and its quickstart is exactly `make demo` + `make test`."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_is_two_commands():
    text = README.read_text()
    block = text.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_python_snippets_run(tmp_path, monkeypatch, capsys):
    snippets = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert snippets
    monkeypatch.chdir(tmp_path)
    for code in snippets:
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "(4, 384)" in out and "cosine_min" in out
    assert (tmp_path / "edgellm-out/minilm-onnx/manifest.json").exists()
