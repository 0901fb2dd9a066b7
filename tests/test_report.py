"""`study-query-llm report` (`analytics.report`): the comparison as a table, CSV and JSON, on
the small hand-made log of `loggen.small_rows`, whose numbers are known (see test_study.py).

Each test builds the arguments with the command's own `add_arguments`, calls `run()` and
reads what it printed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import pytest
from loggen import hour_start, small_rows, write_rows

from analytics import report
from analytics.measures import COMPARISON_COLUMNS

MINI = "openai/gpt-4o-mini"


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "log.db"
    write_rows(str(path), small_rows(hour_start()))
    return path


@pytest.fixture
def empty_db(tmp_path: Path) -> Path:
    path = tmp_path / "empty.db"
    write_rows(str(path), [])
    return path


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No DATABASE_URL from the developer's shell, and a working directory without `.env`."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)


def run_report(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    code = report.run(parser.parse_args(list(argv)))
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out: str) -> list[list[str]]:
    """The body cells of the rich table in `out` (header row included), stripped."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]


def test_table_per_provider_and_model(capsys: pytest.CaptureFixture[str], small_db: Path) -> None:
    code, out, err = run_report(capsys, "--db", str(small_db))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"Log {small_db}, over the whole log: 20 calls, 4 errors (20.0%)"
    assert lines[-2].startswith("Latency and TTFT: successful calls answered upstream")
    rows = table_rows(out)
    assert [r[1] for r in rows] == [MINI, "openai/gpt-4o", "azure/gpt-4o-dep", "mock/echo", "(none)"]
    assert rows[0] == ["openai", MINI, "6", "1 (16.7%)", "250", "385", "397", "60.0", "69.0", "120", "0.0100", "0.0010", "16.7%"]
    assert rows[3] == ["mock", "mock/echo", "4", "1 (25.0%)", "6.00", "6.90", "6.98", "–", "–", "6", "–", "–", "25.0%"]
    assert rows[4][:4] == ["(none)", "(none)", "1", "1 (100.0%)"] and rows[4][4] == "–"
    header = out.splitlines()[2]
    assert [h.strip() for h in header.split("┃")[1:-1]] == [
        "provider", "model", "calls", "errors", "p50 ms", "p95 ms", "p99 ms", "TTFT p50", "TTFT p95", "tokens",
        "cost $", "saved $", "cached",
    ]


def test_table_window_grouping_and_study(capsys: pytest.CaptureFixture[str], small_db: Path) -> None:
    code, out, _ = run_report(capsys, "--db", str(small_db), "--since", "24h")
    assert code == 0
    assert "UTC (last 24h): 19 calls, 4 errors (21.1%)" in out.splitlines()[0]
    rows = table_rows(out)
    assert [r[1] for r in rows][:2] == ["openai/gpt-4o", MINI]  # 5 calls each: a tie, in name order
    assert rows[1][:5] == ["openai", MINI, "5", "1 (20.0%)", "200"]

    _, out, _ = run_report(capsys, "--db", str(small_db), "--by", "tag")
    assert [(r[0], r[1]) for r in table_rows(out)] == [("quiz", "9"), ("(untagged)", "8"), ("pilot", "3"), ("fr", "1")]

    _, out, _ = run_report(capsys, "--db", str(small_db), "--by", "provider", "--study", "quiz")
    assert out.splitlines()[0] == f"Log {small_db}, over the whole log, study 'quiz': 9 calls, 1 error (11.1%)"
    assert [(r[0], r[1], r[3]) for r in table_rows(out)] == [("openai", "5", "1,100"), ("azure", "4", "900")]

    _, out, _ = run_report(capsys, "--db", str(small_db), "--since", "2000-01-01", "--by", "model")
    assert "since 2000-01-01 00:00 UTC: 20 calls" in out.splitlines()[0]  # an absolute time: no "(last …)"


def test_csv_has_every_column_unrounded(capsys: pytest.CaptureFixture[str], small_db: Path) -> None:
    code, out, _ = run_report(capsys, "--db", str(small_db), "--format", "csv")
    assert code == 0
    reader = csv.DictReader(io.StringIO(out))
    assert reader.fieldnames == ["provider", "model", *COMPARISON_COLUMNS]
    rows = {r["model"]: r for r in reader}
    mini = rows[MINI]
    assert (mini["calls"], mini["errors"], mini["p50_latency_ms"], mini["p95_latency_ms"], mini["total_tokens"]) == (
        "6", "1", "250.0", "385.0", "120")
    assert float(mini["error_rate"]) == pytest.approx(1 / 6) and float(mini["cost_usd"]) == pytest.approx(0.01)
    assert rows["mock/echo"]["cost_usd"] == "" and rows["mock/echo"]["dedup"] == "1"
    assert rows[""]["provider"] == "" and rows[""]["calls"] == "1"  # the request refused before routing


def test_json_records(capsys: pytest.CaptureFixture[str], small_db: Path) -> None:
    code, out, _ = run_report(capsys, "--db", str(small_db), "--format", "json", "--by", "tag", "--since", "24h")
    assert code == 0
    records = json.loads(out)
    assert [(r["tag"], r["calls"]) for r in records] == [("quiz", 9), (None, 7), ("pilot", 3), ("fr", 1)]
    pilot = records[2]
    assert set(pilot) == {"tag", *COMPARISON_COLUMNS}
    assert pilot["p50_latency_ms"] == 150.0 and pilot["cache_hits"] == 1 and pilot["saved_cost_usd"] == pytest.approx(0.001)
    assert records[0]["cost_usd"] is None and records[0]["p50_ttft_ms"] is None and records[0]["total_tokens"] is None


def test_an_empty_log_or_window(capsys: pytest.CaptureFixture[str], small_db: Path, empty_db: Path) -> None:
    code, out, err = run_report(capsys, "--db", str(empty_db))
    assert (code, err) == (0, "")
    assert out == f"No calls in {empty_db} over the whole log: nothing to report yet.\n"
    code, out, _ = run_report(capsys, "--db", str(empty_db), "--format", "csv")
    assert code == 0 and out.splitlines() == [",".join(["provider", "model", *COMPARISON_COLUMNS])]
    code, out, _ = run_report(capsys, "--db", str(empty_db), "--format", "json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run_report(capsys, "--db", str(small_db), "--study", "nothing-like-it", "--since", "7d")
    assert code == 0 and out.startswith(f"No calls in {small_db} since ") and "study 'nothing-like-it'" in out


def test_which_log(capsys: pytest.CaptureFixture[str], small_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run_report(capsys)  # no flag, no DATABASE_URL: study_query_llm.db here, which is not there
    assert code == 2 and out == "" and err == "study-query-llm report: no log at study_query_llm.db\n"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{small_db}")
    code, out, _ = run_report(capsys)
    assert code == 0 and out.startswith(f"Log {small_db}, over the whole log: 20 calls")
    code, out, _ = run_report(capsys, "--database-url", f"sqlite:///{small_db}", "--format", "json")
    assert code == 0 and sum(r["calls"] for r in json.loads(out)) == 20
    code, _, err = run_report(capsys, "--database-url", "mysql://localhost/log")
    assert code == 2 and "unsupported database URL" in err


def test_bad_arguments_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--since", "yesterday"], "argument --since: not a time: 'yesterday'"),
        (["--by", "user"], "argument --by: invalid choice: 'user'"),
        (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (["--db", "a", "--database-url", "b"], "not allowed with argument --db"),
    ):
        with pytest.raises(SystemExit) as exit_:
            run_report(capsys, *argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_main_is_the_same_command(capsys: pytest.CaptureFixture[str], small_db: Path) -> None:
    assert report.main(["--db", str(small_db), "--format", "json", "--by", "provider"]) == 0
    assert {r["provider"] for r in json.loads(capsys.readouterr().out)} == {"openai", "azure", "mock", None}
