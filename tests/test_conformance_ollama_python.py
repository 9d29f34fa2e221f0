"""The official `ollama` Python client, pointed at the stand-in, must not notice the difference."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import ollama
import pytest
from pydantic import BaseModel, Field

from ollama_magic.testing import FakeOllama, Fault, Reply


@pytest.fixture
def server():
    with FakeOllama() as fake:
        yield fake


@pytest.fixture
def client(server):
    return ollama.Client(host=server.url)


USER = [{"role": "user", "content": "Why is the sky blue?"}]


def test_chat(server, client):
    server.add_reply("sky", "Because of Rayleigh scattering.")
    resp = client.chat(model="llama3.2", messages=USER)
    assert isinstance(resp, ollama.ChatResponse)
    assert resp.message.role == "assistant"
    assert resp.message.content == "Because of Rayleigh scattering."
    assert (resp.done, resp.done_reason) == (True, "stop")
    assert resp.eval_count > 0 and resp.total_duration > 0
    request = server.last_request("/api/chat")
    assert request.headers["user-agent"].startswith("ollama-python/")
    assert request.body["stream"] is False


def test_generate(client):
    resp = client.generate(model="llama3.2", prompt="Write a haiku")
    assert isinstance(resp, ollama.GenerateResponse)
    assert "Write a haiku" in resp.response
    assert resp.done_reason == "stop"
    assert resp.context and all(isinstance(t, int) for t in resp.context)
    assert resp.created_at.endswith("Z")


def test_streaming_chat_matches_the_non_streamed_answer(client):
    parts = list(client.chat(model="llama3.2", messages=USER, stream=True))
    assert len(parts) > 5
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    whole = client.chat(model="llama3.2", messages=USER)
    assert "".join(p.message.content or "" for p in parts) == whole.message.content


def test_streaming_generate(client):
    parts = list(client.generate(model="llama3.2", prompt="Hello", stream=True))
    assert parts[-1].done_reason == "stop"
    text = "".join(p.response for p in parts)
    assert text == client.generate(model="llama3.2", prompt="Hello").response


def test_thinking(client):
    resp = client.chat(model="qwen3", messages=USER)
    assert resp.message.thinking and resp.message.content
    parts = list(client.chat(model="qwen3", messages=USER, stream=True, think=True))
    assert parts[0].message.thinking and not parts[0].message.content
    off = client.chat(model="qwen3", messages=USER, think=False)
    assert off.message.thinking is None
    gen = client.generate(model="qwen3", prompt="Plan a trip", think="low")
    assert gen.thinking


class City(BaseModel):
    name: str
    population: int = Field(gt=0)


class Country(BaseModel):
    name: str
    capital: City
    cities: list[City]
    languages: list[str]


def test_structured_output_with_a_pydantic_schema(client):
    resp = client.chat(
        model="llama3.2",
        messages=[{"role": "user", "content": "Tell me about France"}],
        format=Country.model_json_schema(),
    )
    country = Country.model_validate_json(resp.message.content)
    assert 2 <= len(country.cities) <= 3
    streamed = client.generate(
        model="llama3.2",
        prompt="Tell me about France",
        format=Country.model_json_schema(),
        stream=True,
    )
    Country.model_validate_json("".join(p.response for p in streamed))


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
        city: The name of the city
    """
    return f"22 degrees and sunny in {city}"


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: first number
        b: second number
    """
    return a + b


def test_tool_calling_round_trip_with_python_functions(client):
    messages = [{"role": "user", "content": "What is the weather? Use get_weather."}]
    resp = client.chat(model="llama3.2", messages=messages, tools=[add, get_weather])
    (call,) = resp.message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments["city"], str)
    result = get_weather(**call.function.arguments)
    messages += [resp.message, {"role": "tool", "content": result, "tool_name": "get_weather"}]
    final = client.chat(model="llama3.2", messages=messages, tools=[add, get_weather])
    assert not final.message.tool_calls
    assert result in final.message.content


def test_streamed_tool_calls_accumulate(server, client):
    calls = [
        {"name": "add", "arguments": {"a": 1, "b": 2}},
        {"name": "get_weather", "arguments": {"city": "Oslo"}},
    ]
    server.add_reply("both", Reply(tool_calls=calls))
    collected = []
    messages = [{"role": "user", "content": "both please"}]
    for part in client.chat(
        model="llama3.2", messages=messages, tools=[add, get_weather], stream=True
    ):
        collected += part.message.tool_calls or []
    assert [(c.function.name, dict(c.function.arguments)) for c in collected] == [
        ("add", {"a": 1, "b": 2}),
        ("get_weather", {"city": "Oslo"}),
    ]


def test_list_show_and_ps(client):
    names = [m.model for m in client.list().models]
    assert names[0] == "llama3.2:latest" and "all-minilm:latest" in names
    first = client.list().models[0]
    assert first.size > 1_000_000_000 and first.details.family == "llama"
    assert isinstance(first.modified_at, datetime)
    shown = client.show("qwen3")
    assert shown.capabilities == ["completion", "tools", "thinking"]
    assert shown.modelinfo["general.architecture"] == "qwen3"
    assert shown.details.parameter_size == "8.2B"
    assert client.ps().models == []
    client.chat(model="llava", messages=USER, keep_alive="1h")
    (loaded,) = client.ps().models
    assert loaded.model == "llava:latest"
    assert loaded.expires_at > datetime.now(timezone.utc)


def test_pull_copy_delete(client):
    progress = list(client.pull("phi4", stream=True))
    assert progress[0].status == "pulling manifest"
    assert progress[-1].status == "success"
    assert any(p.completed and p.completed == p.total for p in progress)
    assert "phi4:latest" in [m.model for m in client.list().models]
    assert client.pull("phi4").status == "success"
    assert client.copy("phi4", "phi4-backup").status == "success"
    assert client.delete("phi4").status == "success"
    assert [m.model for m in client.list().models].count("phi4-backup:latest") == 1
    with pytest.raises(ollama.ResponseError) as info:
        client.delete("phi4")
    assert (info.value.status_code, info.value.error) == (404, "model 'phi4' not found")


def test_pull_unknown_model(client):
    with pytest.raises(ollama.ResponseError) as info:
        client.pull("no-such-model")
    assert (info.value.status_code, info.value.error) == (
        500,
        "pull model manifest: file does not exist",
    )
    with pytest.raises(ollama.ResponseError) as info:
        list(client.pull("no-such-model", stream=True))
    assert info.value.status_code == -1


def test_embeddings(client):
    resp = client.embed(model="all-minilm", input=["first text", "second text"])
    assert len(resp.embeddings) == 2 and len(resp.embeddings[0]) == 384
    assert client.embed(model="all-minilm", input="x", dimensions=16).embeddings[0].__len__() == 16
    assert len(client.embeddings(model="all-minilm", prompt="x").embedding) == 384


def test_load_and_unload(client):
    assert client.generate(model="llama3.2").done_reason == "load"
    assert client.chat(model="llama3.2").done_reason == "load"
    assert client.generate(model="llama3.2", keep_alive=0).done_reason == "unload"
    assert client.ps().models == []


def test_num_predict_and_logprobs(server, client):
    server.add_reply("count", "one two three four")
    resp = client.generate(model="llama3.2", prompt="count", options={"num_predict": 2})
    assert (resp.response, resp.done_reason, resp.eval_count) == ("one two", "length", 2)
    resp = client.chat(
        model="llama3.2",
        messages=[{"role": "user", "content": "count"}],
        logprobs=True,
        top_logprobs=3,
    )
    assert [lp.token for lp in resp.logprobs] == ["one", " two", " three", " four"]
    assert len(resp.logprobs[0].top_logprobs) == 3


def test_images_reach_a_vision_model(server, client):
    image = b"\x89PNG\r\n\x1a\n" + bytes(32)
    resp = client.chat(
        model="llava", messages=[{"role": "user", "content": "What is this?", "images": [image]}]
    )
    assert "1 image" in resp.message.content
    assert server.last_request("/api/chat").body["messages"][0]["images"]


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"model": "nope"}, 404, "model 'nope' not found"),
        ({"model": "llama3.2", "think": True}, 400, '"llama3.2" does not support thinking'),
        ({"model": "all-minilm"}, 400, '"all-minilm" does not support chat'),
        ({"model": "llama3.2", "keep_alive": "-1"}, 400, 'time: missing unit in duration "-1"'),
        (
            {"model": "llava", "tools": [add]},
            400,
            "registry.ollama.ai/library/llava:latest does not support tools",
        ),
        (
            {"model": "llama3.2", "options": {"temperature": "hot"}},
            500,
            'option "temperature" must be of type float32',
        ),
    ],
)
def test_http_errors_become_response_errors(client, kwargs, status, error):
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(messages=USER, **kwargs)
    assert (info.value.status_code, info.value.error) == (status, error)
    assert str(info.value) == f"{error} (status code: {status})"


def test_streaming_errors_surface_on_first_iteration(client):
    stream = client.chat(model="nope", messages=USER, stream=True)  # lazy: nothing sent yet
    with pytest.raises(ollama.ResponseError) as info:
        next(stream)
    assert info.value.status_code == 404


def test_mid_stream_error_is_a_response_error_with_status_minus_one(server, client):
    server.inject(Fault(error_after=2, error="an error was encountered while running the model"))
    parts = []
    with pytest.raises(ollama.ResponseError) as info:
        for part in client.chat(model="llama3.2", messages=USER, stream=True):
            parts.append(part)
    assert len(parts) == 2
    assert info.value.status_code == -1
    assert info.value.error == "an error was encountered while running the model"


def test_injected_status_and_proxy_errors(server, client):
    busy = "server busy, please try again.  maximum pending requests exceeded"
    server.inject(Fault(status=503, error=busy), times=1)
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model="llama3.2", prompt="x")
    assert (info.value.status_code, info.value.error) == (503, busy)
    server.inject(Fault(status=502, body="Bad Gateway"), times=1)
    with pytest.raises(ollama.ResponseError) as info:
        client.list()
    assert (info.value.status_code, info.value.error) == (502, "Bad Gateway")
    assert client.list().models  # faults expired


def test_unknown_route_gives_gin_text(server):
    client = ollama.Client(host=server.url + "/not-ollama")
    with pytest.raises(ollama.ResponseError) as info:
        client.list()
    assert (info.value.status_code, info.value.error) == (404, "404 page not found")


def test_async_client_streams(server):
    async def run() -> str:
        client = ollama.AsyncClient(host=server.url)
        text = ""
        async for part in await client.chat(model="llama3.2", messages=USER, stream=True):
            text += part.message.content or ""
        return text

    expected = ollama.Client(host=server.url).chat(model="llama3.2", messages=USER)
    assert asyncio.run(run()) == expected.message.content
