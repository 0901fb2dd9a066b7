"""Run by test_e2e_litellm.py in the venv of client_venv.py: LiteLLM's SDK against the proxy's mock,
chat and the Responses API (whole, streamed, a tool call); prints one JSON line of results."""

from __future__ import annotations

import json
import sys

import litellm

BASE, KEY = sys.argv[1], sys.argv[2]
MODEL = "openai/mock/echo"  # LiteLLM's `openai/` prefix: an OpenAI-compatible server at api_base
ASK = {"model": MODEL, "api_base": BASE, "api_key": KEY}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather now",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}

# LiteLLM fakes a stream (asks whole, then streams the answer itself) for a model it has no
# facts about: say that this one streams, so that the proxy relays a real stream
litellm.register_model({"mock/echo": {"litellm_provider": "openai", "mode": "chat", "supports_native_streaming": True}})
results = {}
chat = litellm.completion(messages=[{"role": "user", "content": "Say hi"}], **ASK)
results["chat"] = chat.choices[0].message.content
whole = litellm.responses(input="Hello there", instructions="Be brief.", **ASK)
results["responses"] = {"id": whole.id, "text": whole.output[0].content[0].text,
                        "input_tokens": whole.usage.input_tokens}
deltas, kinds = [], []
for event in litellm.responses(input="Stream this please", stream=True, **ASK):
    kind = getattr(event, "type", "")
    kinds.append(str(getattr(kind, "value", kind)))  # LiteLLM's event types are an Enum of str
    if kinds[-1] == "response.output_text.delta":
        deltas.append(event.delta)
follow_up = litellm.responses(input="And then?", previous_response_id=whole.id, **ASK)
results["follow_up"] = follow_up.output[0].content[0].text
results["stream"] = {"text": "".join(deltas), "first": kinds[0], "last": kinds[-1]}
called = litellm.responses(input="Weather in Rome?", tools=[WEATHER], tool_choice="required", **ASK)
call = next(item for item in called.output if item.type == "function_call")
results["tool"] = {"name": call.name, "arguments": json.loads(call.arguments)}
print(json.dumps(results))
