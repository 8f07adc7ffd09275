"""What counts as data in a folder: every file but the reports and markers beside it."""

from pathlib import Path

from edgellm.data.files import data_files, hidden


def test_reports_and_markers_are_not_data(tmp_path):
    for rel in ("b.jsonl", "sub/a.txt", "_report/report.json", ".edgellm-dataset.json", "sub/.tmp/x.jsonl"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    assert data_files(tmp_path) == [tmp_path / "b.jsonl", tmp_path / "sub" / "a.txt"]
    assert hidden(Path("_report/report.json")) and not hidden(Path("part-00000.jsonl"))
