"""The study runner's input: prompt files (JSONL and CSV, and the messages they give when they
are bad), its arguments and `--param`s, the plan of calls and the metadata header of each call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analytics import plan, runner
from analytics.plan import metadata_header, parse_params, plan_calls
from analytics.prompts import StudyError, load_prompts
from study_runs import PROMPTS, write_jsonl
from study_runs import clean_env  # noqa: F401  (a fixture)

pytestmark = pytest.mark.timeout(60)


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
