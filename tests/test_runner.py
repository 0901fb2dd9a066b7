"""The study runner (`study-query-llm study`) in this process: the rows it leaves in the log,
`--resume`, a model that cannot be used, failed calls run again, the progress line and the
comparison at the end.

`analytics.runner.main()` runs in this process against the mock provider, or the fake upstream
through `OPENAI_BASE_URL`. Prompt files and the plan: test_runner_plan.py; the real CLI
(Ctrl-C) and a running proxy (`--base-url`): test_runner_cli.py.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import pytest

from analytics import runner
from analytics.progress import Progress
from conftest import Log, fake_key, provider_env, unique
from study_runs import PROMPTS, expected_keys, keys, study_rows, write_jsonl
from study_runs import clean_env  # noqa: F401  (a fixture)

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------------------
# In-process runs (the mock provider, or the fake upstream)
# --------------------------------------------------------------------------------------


def test_in_process_study_records_one_tagged_row_per_call(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(clean_env / "prompts.jsonl", PROMPTS)
    db = clean_env / "log.db"
    models = ["mock/alpha", "mock/beta"]
    code = runner.main(["prompts.jsonl", "--models", ",".join(models), "--repeats", "2", "--concurrency", "3",
                        "--param", "temperature=0.2", "--param", "max_tokens=64", "--db", str(db)])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = study_rows(db, "prompts")  # the default name: the file's
    assert len(rows) == 12 == len(Log(db).rows())
    assert set(keys(rows)) == expected_keys(3, models, 2) and max(keys(rows).values()) == 1
    runs = set()
    for row in rows:
        assert row["status_code"] == 200 and row["error"] is None and row["provider"] == "mock"
        assert json.loads(row["tags"]) == ["prompts"] and row["session_id"] == "prompts"
        assert row["cache"] is None  # neither cached nor folded into another call
        meta = json.loads(row["metadata"])
        runs.add(meta.pop("run"))
        item = PROMPTS[meta["item"]]
        assert meta == {"study": "prompts", "item": meta["item"], "repeat": meta["repeat"],
                        "input_hash": meta["input_hash"], **{k: v for k, v in item.items() if k not in ("prompt", "messages")}}
        request = json.loads(row["request_json"])
        assert request["temperature"] == 0.2 and request["max_tokens"] == 64 and "metadata" not in request
        assert request["messages"] == item.get("messages") or request["messages"][0]["content"] == item["prompt"]
        headers = json.loads(row["request_headers"])
        assert headers["x-study-dedup"] == "off" and headers["x-study-cache"] == "off"
    assert len(runs) == 1
    # The comparison at the end names every model; the final progress line counts the calls.
    assert all(model in out for model in models), out
    assert "12/12 calls (12 ok, 0 failed)" in err, err


def test_rerun_needs_resume_which_runs_only_what_is_missing(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(clean_env / "p.jsonl", PROMPTS)
    args = ["p.jsonl", "--models", "mock/a,mock/b", "--name", "pilot-1", "--db", "log.db"]
    assert runner.main(args) == 0
    assert len(study_rows(clean_env / "log.db", "pilot-1")) == 6
    capsys.readouterr()

    # The same study again without --resume would mix two runs: refused.
    assert runner.main(args) == 2
    err = capsys.readouterr().err
    assert "already has 6 rows of study 'pilot-1'" in err and "--resume" in err

    # Nothing is missing: no call.
    assert runner.main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "6 already in the log, 0 to run" in err and "Nothing to run" in err
    assert len(Log(clean_env / "log.db").rows()) == 6

    # More repeats: only the new repeat runs.
    assert runner.main([*args, "--resume", "--repeats", "2"]) == 0
    assert "6 already in the log, 6 to run" in capsys.readouterr().err
    rows = study_rows(clean_env / "log.db", "pilot-1")
    assert len(rows) == 12 and set(keys(rows)) == expected_keys(3, ["mock/a", "mock/b"], 2)

    # An edited prompt is new work (its input hash changed); the others stay done.
    edited = [dict(PROMPTS[0]), PROMPTS[1], PROMPTS[2]]
    edited[0]["prompt"] = "Name a river in Spain."
    write_jsonl(path, edited)
    assert runner.main([*args, "--resume", "--repeats", "2"]) == 0
    assert "8 already in the log, 4 to run" in capsys.readouterr().err
    assert len(study_rows(clean_env / "log.db", "pilot-1")) == 16


def test_unknown_model_is_tried_once_then_skipped(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(clean_env / "p.jsonl", PROMPTS)
    # `azure/…` without an Azure key: the proxy answers 404 model_not_found.
    code = runner.main(["p.jsonl", "--models", "mock/a,azure/gpt-4o", "--repeats", "2", "--db", "log.db"])
    out, err = capsys.readouterr()
    assert code == 1
    rows = study_rows(clean_env / "log.db", "p")
    failed = [r for r in rows if r["model"] == "azure/gpt-4o"]
    assert len(failed) == 1 and failed[0]["status_code"] == 404
    assert len(keys(rows)) == 6  # every mock/a call ran
    assert "model 'azure/gpt-4o' cannot be used (HTTP 404" in err and "provider `azure` has no API key" in err
    assert "5 skipped" in err
    assert "azure/gpt-4o" in out  # the comparison shows the failure too


def test_failed_calls_are_run_again_by_resume(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, upstream
) -> None:
    for name, value in provider_env(upstream, openai=fake_key()).items():
        monkeypatch.setenv(name, value)
    flaky = unique("fail-503-twice")  # its first two calls fail
    models = [f"openai/{unique('ok')}", f"openai/{flaky}"]
    write_jsonl(clean_env / "p.jsonl", PROMPTS)
    args = ["p.jsonl", "--models", ",".join(models), "--retries", "0", "--concurrency", "1", "--db", "log.db"]
    assert runner.main(args) == 1
    out, err = capsys.readouterr()
    assert "2 of 6 calls failed" in err and "--resume" in err
    assert "Fake upstream is overloaded." in out
    rows = study_rows(clean_env / "log.db", "p")
    assert [r["status_code"] for r in rows if r["model"] == models[1]] == [503, 503, 200]
    assert all(r["attempts"] == 1 for r in rows)  # --retries 0 reached the proxy

    upstream.clear()
    assert runner.main([*args, "--resume"]) == 0
    assert upstream.count() == 2 and upstream.count(flaky) == 2  # only the two that failed
    rows = study_rows(clean_env / "log.db", "p")
    assert set(keys(rows)) == expected_keys(3, models, 1) and max(keys(rows).values()) == 1


# --------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_shows_rate_and_eta() -> None:
    pytest.importorskip("tqdm")
    stream = FakeTerminal()
    progress = Progress("study x", total=4, done=1, stream=stream)
    for outcome in ("ok", "failed"):
        time.sleep(0.01)
        progress.advance(outcome)
    progress.close()
    text = stream.getvalue()
    assert "study x" in text and "3/4" in text and "call/s" in text and "<" in text  # elapsed<ETA, rate
    assert text.rstrip().endswith("calls/s")
    assert "study x: 3/4 calls (1 ok, 1 failed, 1 done before)" in text


def test_progress_without_a_terminal_prints_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("analytics.progress.PLAIN_PROGRESS_INTERVAL", 0.0)
    stream = io.StringIO()
    progress = Progress("study y", total=3, done=0, stream=stream)
    progress.advance("ok")
    progress.advance("skipped")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("study y: 1/3 calls, ") and "ETA 0:0" in lines[0]
    assert "\r" not in stream.getvalue()
    assert lines[-1].startswith("study y: 2/3 calls (1 ok, 0 failed, 1 skipped)")


# --------------------------------------------------------------------------------------
# The comparison at the end
# --------------------------------------------------------------------------------------


def test_the_comparison_comes_from_analytics_study_when_it_is_there(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    calls = []

    class Table:
        empty = False

        def to_string(self, index: bool = True) -> str:
            return "FAKE COMPARISON TABLE"

    class Study:
        def __init__(self, db: str) -> None:
            calls.append(db)

        def provider_comparison(self, study: str | None = None) -> Table:
            calls.append(study)
            return Table()

    monkeypatch.setitem(sys.modules, "analytics.study", types.SimpleNamespace(Study=Study))
    write_jsonl(clean_env / "p.jsonl", PROMPTS[:1])
    assert runner.main(["p.jsonl", "--models", "mock/a", "--name", "cmp", "--db", "log.db"]) == 0
    out = capsys.readouterr().out
    assert "Comparison for study 'cmp'" in out and "FAKE COMPARISON TABLE" in out
    assert calls == ["log.db", "cmp"]

    class Broken(Study):
        def provider_comparison(self, study: str | None = None) -> Table:
            raise RuntimeError("not yet")

    monkeypatch.setitem(sys.modules, "analytics.study", types.SimpleNamespace(Study=Broken))
    assert runner.main(["p.jsonl", "--models", "mock/a", "--name", "cmp2", "--db", "log.db"]) == 0
    out, err = capsys.readouterr()
    assert "analytics.study could not compare the study: RuntimeError: not yet" in err
    assert "Study 'cmp2' (the log, every run of the study):" in out and "mock/a" in out
