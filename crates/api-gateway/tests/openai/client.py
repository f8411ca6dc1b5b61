"""The real `openai` package (PyPI) against the gateway's OpenAI-compatible door.

The Rust tests run it with the project's virtual environment:

    .venv/bin/python client.py SCENARIO BASE_URL API_KEY

and read the one JSON object it prints: what the client library saw. The
client is used unmodified, as a user would: no retries unless a scenario
asks for them.
"""

import json
import sys
import time

import openai

MODEL = "deepseek-chat"
QUESTION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Why do the tests fail?"},
]
WEATHER = [{"role": "user", "content": "What is the weather in Oslo?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city now.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def failure(error):
    """What an API error told the client."""
    return {
        "error": type(error).__name__,
        "status": error.status_code,
        "type": error.type,
        "code": error.code,
        "param": error.param,
        "message": error.message,
        "retry_after": error.response.headers.get("retry-after"),
        "retry_after_ms": error.response.headers.get("retry-after-ms"),
    }


def chat(client):
    answer = client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0.2, max_tokens=64
    )
    return answer.model_dump()


def stream(client):
    chunks = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        stream=True,
        stream_options={"include_usage": True},
    )
    return {"chunks": [chunk.model_dump() for chunk in chunks]}


def weather(arguments):
    """The tool: the weather in the city the model asks about."""
    return "12 °C" if json.loads(arguments)["city"] == "Oslo" else "unknown"


def tools(client):
    """A tool-call round trip, the way the SDK's users write it."""
    first = client.chat.completions.create(
        model=MODEL, messages=WEATHER, tools=TOOLS, tool_choice="auto"
    )
    message = first.choices[0].message
    call = message.tool_calls[0]
    messages = WEATHER + [
        message,
        {"role": "tool", "tool_call_id": call.id, "content": weather(call.function.arguments)},
    ]
    second = client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, tool_choice="auto"
    )
    return {"first": first.model_dump(), "second": second.model_dump()}


def tools_stream(client):
    """The same round trip, the tool call streamed and put together by index."""
    calls = {}
    finish = None
    for chunk in client.chat.completions.create(
        model=MODEL, messages=WEATHER, tools=TOOLS, tool_choice="auto", stream=True
    ):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for piece in choice.delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = piece.id or call["id"]
                if piece.function:
                    call["name"] = piece.function.name or call["name"]
                    call["arguments"] += piece.function.arguments or ""
    call = calls[0]
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": call["arguments"]},
            }
        ],
    }
    second = client.chat.completions.create(
        model=MODEL,
        messages=WEATHER
        + [assistant, {"role": "tool", "tool_call_id": call["id"], "content": weather(call["arguments"])}],
        tools=TOOLS,
    )
    return {"finish_reason": finish, "calls": calls, "second": second.model_dump()}


def refused(client):
    """A chat call expected to fail: what the SDK raised."""
    started = time.monotonic()
    try:
        client.chat.completions.create(model=MODEL, messages=QUESTION)
    except openai.APIStatusError as error:
        return dict(failure(error), elapsed=time.monotonic() - started)
    return {"error": None}


def refused_after_a_retry(client):
    return refused(client.with_options(max_retries=1))


def models(client):
    listed = [model.model_dump() for model in client.models.list()]
    one = client.models.retrieve(MODEL).model_dump()
    try:
        client.models.retrieve("no-such-model")
        missing = None
    except openai.NotFoundError as error:
        missing = failure(error)
    return {"listed": listed, "one": one, "missing": missing}


SCENARIOS = {
    "chat": chat,
    "stream": stream,
    "tools": tools,
    "tools_stream": tools_stream,
    "refused": refused,
    "refused_after_a_retry": refused_after_a_retry,
    "models": models,
}


def main():
    scenario, base_url, api_key = sys.argv[1:4]
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
    print(json.dumps(SCENARIOS[scenario](client)))


if __name__ == "__main__":
    main()
