"""The study runner (`study-query-llm study`): prompt files, parameters, the plan, the rows it
leaves in the log, `--resume`, Ctrl-C, a running proxy (`--base-url`) and the progress line.

In-process runs call `analytics.runner.main()` in this process (the mock provider, or the
fake upstream through `OPENAI_BASE_URL`); the Ctrl-C test runs the real CLI as a subprocess
and interrupts it with SIGINT while `slow-*` calls (300 ms each at the fake upstream) are in
flight.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from analytics import plan, runner
from analytics.plan import metadata_header, parse_params, plan_calls
from analytics.progress import Progress
from analytics.prompts import StudyError, load_prompts
from conftest import Log, fake_key, minimal_env, provider_env, unique

pytestmark = pytest.mark.timeout(60)

PROMPTS = [
    {"prompt": "Name a river in France.", "lang": "en", "difficulty": 1},
    {"messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Capital of Peru?"}],
     "lang": "en"},
    {"prompt": "Quelle est la capitale du Japon ?", "lang": "fr", "expected": "Tokyo"},
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No provider, database or proxy-key variable from the developer's shell; cwd without `.env`."""
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "AZURE_", "HYPERBOLIC_", "DATABASE_URL", "PANEL_", "STUDY_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def study_rows(db: Path, name: str) -> list[dict]:
    rows = [dict(r) for r in Log(db).rows()]
    return [r for r in rows if r["tags"] and name in json.loads(r["tags"])]


def keys(rows: list[dict]) -> Counter:
    """(item, model, repeat) of the successful rows, with how many rows each has."""
    found = Counter()
    for row in rows:
        if row["status_code"] == 200 and row["error"] is None:
            meta = json.loads(row["metadata"])
            found[(meta["item"], row["model"], meta["repeat"])] += 1
    return found


def expected_keys(items: int, models: list[str], repeats: int) -> set:
    return {(i, m, r) for i in range(items) for m in models for r in range(repeats)}


# --------------------------------------------------------------------------------------
# Prompt files, parameters, names, the plan
# --------------------------------------------------------------------------------------


def test_jsonl_items_keep_their_other_fields_as_metadata(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps(PROMPTS[0]) + "\n\n   \n" + json.dumps(PROMPTS[1]) + "\n")
    items = load_prompts(path)
    assert [i.index for i in items] == [0, 1]
    assert items[0].messages == [{"role": "user", "content": "Name a river in France."}]
    assert items[0].extras == {"lang": "en", "difficulty": 1}
    assert items[1].messages == PROMPTS[1]["messages"]
    assert items[1].where.endswith("set.jsonl:4")


def test_csv_needs_a_prompt_column_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "set.csv"
    path.write_text('\ufeffid,prompt,topic\n1,"Hello, world",greeting\n\n2,"Say ""hi""\non two lines",greeting\n3,x,\n')
    items = load_prompts(path)
    assert [i.messages[0]["content"] for i in items] == ["Hello, world", 'Say "hi"\non two lines', "x"]
    assert items[1].extras == {"id": "2", "topic": "greeting"}
    assert items[2].where.endswith("set.csv:6")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("set.jsonl", '{"prompt": "ok"}\n{"prompt": "broken"\n', "set.jsonl:2: not valid JSON"),
        ("set.jsonl", '{"prompt": "ok"}\n["a list"]\n', "set.jsonl:2: expected a JSON object"),
        ("set.jsonl", '{"prompt": "ok"}\n\n{"question": "no prompt"}\n', 'set.jsonl:3: no "prompt" or "messages" field'),
        ("set.jsonl", '{"prompt": ""}\n', '"prompt" must be non-empty text'),
        ("set.jsonl", '{"messages": [{"content": "no role"}]}\n', "messages[0] must be an object with a \"role\""),
        ("set.jsonl", '{"prompt": "a", "messages": []}\n', "not both"),
        ("set.jsonl", "\n\n", "no prompts in the file"),
        ("set.csv", "question,answer\nwhy,because\n", "needs a 'prompt' column (columns found: 'question', 'answer')"),
        ("set.csv", "prompt,topic\nhello,x,extra\n", "set.csv:2: this row has more fields than the header"),
    ],
)
def test_bad_prompt_files_exit_2_with_a_clear_message(
    clean_env: Path, capsys: pytest.CaptureFixture[str], name: str, content: str, message: str
) -> None:
    (clean_env / name).write_text(content)
    assert runner.main([name, "--models", "mock/a", "--db", "log.db"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    assert not (clean_env / "log.db").exists()  # nothing was started


def test_missing_file_and_bad_arguments_exit_2(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main(["nope.jsonl", "--models", "mock/a"]) == 2
    assert "prompt file not found: nope.jsonl" in capsys.readouterr().err
    write_jsonl(clean_env / "p.jsonl", PROMPTS)
    cases = [
        (["--models", " , "], "--models: give at least one model"),
        (["--models", "mock/a", "--param", "temperature"], "expected KEY=VALUE"),
        (["--models", "mock/a", "--param", "model=x"], "--param model: set by the runner itself"),
        (["--models", "mock/a", "--name", "two words"], "--name 'two words'"),
        (["--models", "mock/a", "--name", "a,b"], "--name 'a,b'"),
        (["--models", "mock/a", "--api-key", "k"], "--api-key is for a running proxy"),
        (["--models", "mock/a", "--base-url", "http://127.0.0.1:9/v1", "--resume"], "--resume with --base-url"),
        (["--models", "mock/a", "--base-url", "http://127.0.0.1:9/v1", "--config", "x.toml"], "--config configures"),
        (["--models", "mock/a", "--config", "missing.toml"], "configuration error: cannot read config file"),
    ]
    for extra, message in cases:
        assert runner.main(["p.jsonl", *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors exit 2 as well
        runner.main(["p.jsonl", "--models", "mock/a", "--repeats", "0"])
    assert exit_info.value.code == 2


def test_params_are_parsed_as_json_when_they_can_be() -> None:
    params = parse_params([
        "temperature=0.2", "max_tokens=50", "logprobs=true", "seed=null", "stop=[\"\\n\", \"END\"]",
        'response_format={"type": "json_object"}', "user=alice", "note=two words", 'quoted="42"', "empty=",
    ])
    assert params == {
        "temperature": 0.2, "max_tokens": 50, "logprobs": True, "seed": None, "stop": ["\n", "END"],
        "response_format": {"type": "json_object"}, "user": "alice", "note": "two words", "quoted": "42", "empty": "",
    }
    with pytest.raises(StudyError, match="messages"):
        parse_params(["messages=[]"])


def test_plan_interleaves_models_and_hashes_what_is_asked(tmp_path: Path) -> None:
    items = load_prompts(write_jsonl(tmp_path / "p.jsonl", PROMPTS[:2]))
    calls = plan_calls(items, ["m1", "m2"], 2, {"temperature": 0})
    assert [(c.item.index, c.repeat, c.model) for c in calls[:4]] == [(0, 0, "m1"), (0, 0, "m2"), (0, 1, "m1"), (0, 1, "m2")]
    assert len(calls) == 8 and len({c.key for c in calls}) == 8
    assert calls[0].input_hash == calls[3].input_hash != calls[4].input_hash
    assert plan_calls(items, ["m1"], 1, {"temperature": 1})[0].input_hash != calls[0].input_hash
    assert runner.default_name("/x/My prompts (v2).jsonl") == "My-prompts-v2"


def test_metadata_header_is_ascii_json_and_stays_small(tmp_path: Path) -> None:
    items = load_prompts(write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "x", "lang": "français", "item": "mine", "long": "y" * 20_000, "after": 1},
    ]))
    call = plan_calls(items, ["m"], 1, {})[0]
    value, omitted = metadata_header("s1", "run1", call)
    assert value.isascii() and len(value) < plan.METADATA_HEADER_LIMIT + 200
    meta = json.loads(value)
    assert meta == {"study": "s1", "run": "run1", "item": 0, "repeat": 0, "input_hash": call.input_hash,
                    "lang": "français", "after": 1, "omitted_fields": ["item", "long"]}
    assert omitted == ["item", "long"]


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
# Ctrl-C and --resume, the real CLI in a subprocess against the fake upstream
# --------------------------------------------------------------------------------------


def study_command() -> list[str]:
    """`python -m proxy study` once the CLI has the command; the module's own entry until then."""
    from proxy.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if "study" in commands.choices:
        return [sys.executable, "-m", "proxy", "study"]
    return [sys.executable, "-m", "analytics.runner"]


def test_ctrl_c_keeps_what_finished_and_resume_runs_only_the_rest(tmp_path: Path, upstream) -> None:
    slow = [unique("slow-a"), unique("slow-b")]  # 300 ms per call at the fake upstream
    models = [f"openai/{m}" for m in slow]
    write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    db = tmp_path / "log.db"
    env = minimal_env(provider_env(upstream, openai=fake_key()))
    args = [*study_command(), "p.jsonl", "--models", ",".join(models), "--repeats", "2", "--concurrency", "2",
            "--name", "ctrl-c", "--db", str(db)]
    total = 3 * 2 * 2

    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        Log(db).wait_count(3, timeout=15)  # a few calls finished and are in the log
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert "Traceback" not in err, err
    rows = study_rows(db, "ctrl-c")
    done = keys(rows)
    assert 3 <= len(done) < total, err
    assert sum(r["status_code"] == 200 for r in rows) == len(done)  # one success row per finished call
    assert "Interrupted" in err and f"{total - len(done)} of the study's {total} calls are still to do" in err
    assert "--name ctrl-c" in err and "--resume" in err
    assert all(m in out for m in models), out  # the comparison so far

    upstream.clear()
    finished = subprocess.run([*args, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert finished.returncode == 0, finished.stderr
    assert f"{len(done)} already in the log, {total - len(done)} to run" in finished.stderr
    assert upstream.count() == total - len(done)  # only the missing calls reached the upstream
    rows = study_rows(db, "ctrl-c")
    assert set(keys(rows)) == expected_keys(3, models, 2) and max(keys(rows).values()) == 1
    assert sum(r["status_code"] == 200 for r in rows) == total
    assert len({json.loads(r["metadata"])["run"] for r in rows}) == 2  # two runs, one study


# --------------------------------------------------------------------------------------
# A running proxy (--base-url)
# --------------------------------------------------------------------------------------

CLIENTS_CONFIG = """
[clients]
alice = { key_env = "ALICE_PROXY_KEY" }
"""


def test_base_url_mode_goes_through_a_running_proxy(
    proxy_factory, upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = fake_key("sk-proxy-alice")
    server = proxy_factory(env=provider_env(upstream, openai=fake_key(), ALICE_PROXY_KEY=alice), config=CLIENTS_CONFIG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STUDY_QUERY_LLM_API_KEY", raising=False)
    write_jsonl(tmp_path / "p.jsonl", PROMPTS[:2])
    models = [f"openai/{unique('net-a')}", f"openai/{unique('net-b')}"]
    args = ["p.jsonl", "--models", ",".join(models), "--name", "remote", "--base-url", server.v1]

    # A wrong proxy key: every model fails its first call with 401 and the rest is skipped.
    assert runner.main([*args, "--api-key", "wrong"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "2 skipped" in err
    assert upstream.count() == 0

    monkeypatch.setenv("STUDY_QUERY_LLM_API_KEY", alice)
    assert runner.main([*args, "--db", str(server.db_path), "--resume"]) == 0
    out, err = capsys.readouterr()
    assert "0 already in the log, 4 to run" in err
    assert all(m in out for m in models), out
    assert upstream.count() == 4
    for request in upstream.requests:
        assert "x-study-metadata" not in request.headers and "metadata" not in request.json
        assert request.headers["authorization"] != f"Bearer {alice}"  # the proxy key stays at the proxy
    rows = [r for r in study_rows(server.db_path, "remote") if r["status_code"] == 200]
    assert set(keys(rows)) == expected_keys(2, models, 1)
    assert all(r["client"] == "alice" and r["session_id"] == "remote" for r in rows)

    # Resume reads the running proxy's log: nothing left to do.
    upstream.clear()
    assert runner.main([*args, "--db", str(server.db_path), "--resume"]) == 0
    assert "Nothing to run" in capsys.readouterr().err and upstream.count() == 0


def test_unreachable_proxy_stops_the_run(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import free_port

    write_jsonl(clean_env / "p.jsonl", PROMPTS)
    code = runner.main(["p.jsonl", "--models", "m", "--base-url", f"http://127.0.0.1:{free_port()}/v1"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot reach the proxy at http://127.0.0.1:" in err and "Traceback" not in err


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
