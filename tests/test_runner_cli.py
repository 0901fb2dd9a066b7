"""The study runner outside this process: the real CLI in a subprocess, interrupted with SIGINT
while `slow-*` calls (300 ms each at the fake upstream) are in flight and then resumed, and a run
through a running proxy (`--base-url`), reachable or not.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from analytics import runner
from conftest import Log, fake_key, free_port, minimal_env, provider_env, unique
from study_runs import PROMPTS, expected_keys, keys, study_rows, write_jsonl
from study_runs import clean_env  # noqa: F401  (a fixture)

pytestmark = pytest.mark.timeout(60)


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
    write_jsonl(clean_env / "p.jsonl", PROMPTS)
    code = runner.main(["p.jsonl", "--models", "m", "--base-url", f"http://127.0.0.1:{free_port()}/v1"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot reach the proxy at http://127.0.0.1:" in err and "Traceback" not in err
