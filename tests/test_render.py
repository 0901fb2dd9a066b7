import base64
import struct

from proxy.render import embedding_dimensions, render_answer, render_prompt


def base64_vector(n: int) -> str:
    return base64.b64encode(struct.pack(f"<{n}f", *range(n))).decode()


def test_base64_embeddings_count_float32_values_not_characters():
    encoded = base64_vector(16)
    assert len(encoded) == 88  # what used to be logged as the dimension count
    assert embedding_dimensions(encoded) == 16
    answer = {"data": [{"embedding": encoded}, {"embedding": encoded}]}
    assert render_answer("embeddings", answer) == "[2 embedding(s) of 16 dimensions]"


def test_float_embeddings_and_ones_that_are_not_embeddings():
    assert render_answer("embeddings", {"data": [{"embedding": [0.5] * 3}]}) == "[1 embedding(s) of 3 dimensions]"
    assert render_answer("embeddings", {"data": [{"embedding": "not base64!"}]}) == "[1 embedding(s) of ? dimensions]"
    assert embedding_dimensions(None) is None


def test_a_tool_call_without_text_has_no_leading_newline():
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    answer = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
    assert render_answer("chat/completions", answer) == '[tool call] get_weather({"city": "Oslo"})'
    answer["choices"][0]["message"]["content"] = "Let me look."
    assert render_answer("chat/completions", answer) == 'Let me look.\n[tool call] get_weather({"city": "Oslo"})'


def test_tool_calls_in_the_prompt_read_the_same_way():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    payload = {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call, call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "tool_calls": 5},  # not a list: ignored, not a crash in the recorder
    ]}
    assert render_prompt("chat/completions", payload) == (
        "user: hi\n\nassistant: [tool call] f({})\n[tool call] f({})\n\ntool: sunny\n\nassistant: "
    )


def test_a_prompt_of_token_ids_is_one_line_and_a_batch_one_line_a_prompt():
    assert render_prompt("completions", {"prompt": [15, 27, 3]}) == "15 27 3"
    assert render_prompt("completions", {"prompt": ["one", "two"]}) == "one\ntwo"
    assert render_prompt("embeddings", {"input": [[1, 2], [3]]}) == "[1, 2]\n[3]"
