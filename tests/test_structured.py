"""Structured outputs, thinking, images and tools, through the magic and from Python."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from typing import Literal, TypedDict

import pytest
from _util import plain
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from pydantic import BaseModel

import ollama_magic.api as api
from ollama_magic import BadRequest, Client
from ollama_magic.conversation import Conversation
from ollama_magic.errors import ModelOutputError, OllamaError
from ollama_magic.schema import json_schema
from ollama_magic.structured import output_format
from ollama_magic.testing import Reply
from ollama_magic.tools import function_tool, parse_docstring


class Person(BaseModel):
    name: str
    age: int


@dataclasses.dataclass
class Address:
    city: str
    zip: str | None = None


@dataclasses.dataclass
class Customer:
    name: str
    address: Address
    tier: Literal["gold", "silver"] = "silver"


class Movie(TypedDict):
    title: str
    year: int


SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"enum": ["positive", "negative"]}, "score": {"type": "number"}},
    "required": ["sentiment", "score"],
}


def run(ipython, line, cell, **namespace):
    ipython.user_ns.update(namespace)
    with capture_output() as captured:
        ipython.run_cell_magic("ollama", line, cell)
    return captured


def body(server, path=None):
    return server.last_request(path).body


# -- schemas ----------------------------------------------------------------------------------


def test_schemas_from_python_types():
    customer = json_schema(Customer)
    assert customer["required"] == ["name", "address"]
    assert customer["properties"]["address"]["properties"]["city"] == {"type": "string"}
    assert customer["properties"]["tier"] == {"type": "string", "enum": ["gold", "silver"]}
    assert json_schema(Movie)["required"] == ["title", "year"]
    assert json_schema(list[Person])["items"]["properties"]["age"]["type"] == "integer"
    assert json_schema(dict[str, float]) == {
        "type": "object",
        "additionalProperties": {"type": "number"},
    }


# -- --format ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "check"),
    [
        ("Person", lambda v: isinstance(v, Person) and isinstance(v.age, int)),
        ("People", lambda v: isinstance(v, list) and v and all(isinstance(p, Person) for p in v)),
        ("Customer", lambda v: isinstance(v, Customer) and isinstance(v.address, Address)),
        ("Movie", lambda v: isinstance(v, dict) and set(v) >= {"title", "year"}),
        ("SCHEMA", lambda v: v["sentiment"] in ("positive", "negative")),
        ("json", lambda v: isinstance(v, dict)),
    ],
)
def test_each_schema_source_sends_a_format_and_binds_an_object(ipython, fake_ollama, spec, check):
    namespace = dict(
        Person=Person, People=list[Person], Customer=Customer, Movie=Movie, SCHEMA=SCHEMA
    )
    run(ipython, f"llama3.2 -f {spec} -o value", "Extract it.", **namespace)
    sent = body(fake_ollama)["format"]
    expected = "json" if spec == "json" else output_format(namespace[spec]).format
    assert sent == expected
    assert check(ipython.user_ns["value"]), ipython.user_ns["value"]


def test_inline_schema_text(ipython, fake_ollama):
    schema = '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}'
    run(ipython, f"llama3.2 -o v -f '{schema}'", "n?")
    assert body(fake_ollama)["format"]["required"] == ["n"]
    assert isinstance(ipython.user_ns["v"]["n"], int)


def test_a_list_of_records_shows_as_a_table_and_binds_a_dataframe(ipython, fake_ollama):
    pd = pytest.importorskip("pandas")
    captured = run(
        ipython, "llama3.2 -f People -o df --as-dataframe", "People?", People=list[Person]
    )
    assert isinstance(ipython.user_ns["df"], pd.DataFrame)
    assert list(ipython.user_ns["df"].columns) == ["name", "age"]
    final = captured.outputs[-1].data["text/html"]
    assert '<table border="0" class="dataframe">' in final or "<table" in final


def test_while_streaming_the_json_shows_as_code(ipython, fake_ollama):
    captured = run(ipython, "llama3.2 -f Person", "Who?", Person=Person)
    live = [o.data["text/html"] for o in captured.outputs[:-1] if o.data.get("text/html")]
    assert any('<code class="language-json">' in html for html in live)
    assert "<details open>" in captured.outputs[-1].data["text/html"]  # a tree at the end


def test_chat_with_a_format_adds_the_json_answer_to_the_history(ipython, fake_ollama):
    run(ipython, "llama3.2 -c -f Person -o p", "Extract: Ada, 36", Person=Person)
    conversation = ipython.magics_manager.registry["OllamaMagics"].workspace.conversations[
        "default"
    ]
    answer = conversation.messages[-1]
    assert answer["role"] == "assistant"
    assert Person.model_validate_json(answer["content"]) == ipython.user_ns["p"]


def test_invalid_json_is_asked_for_again_then_accepted(ipython, fake_ollama):
    fake_ollama.add_reply("Extract", "this is not JSON")
    fake_ollama.add_reply("not valid", '{"name": "Ada", "age": 36}')
    captured = run(
        ipython, "llama3.2 -f Person -o p --retries 2", "Extract: Ada, 36", Person=Person
    )
    assert ipython.user_ns["p"] == Person(name="Ada", age=36)
    retry_prompt = body(fake_ollama)["prompt"]
    assert "That answer was not valid: The answer is not valid JSON" in retry_prompt
    assert '"required"' in retry_prompt, "the schema is repeated to the model"
    html = "".join(o.data.get("text/html", "") for o in captured.outputs)
    assert "Asking again (1/2)" in html


def test_schema_violations_are_retried_in_chat_and_then_a_clear_error(ipython, fake_ollama):
    fake_ollama.add_reply(".", '{"name": "Ada", "age": "old"}')
    with pytest.raises(ModelOutputError) as info:
        run(ipython, "llama3.2 -c -f Person -o p --retries 1", "Extract: Ada", Person=Person)
    assert "does not match Person: at $.age" in info.value.message
    assert ipython.user_ns["_ollama_raw"] == '{"name": "Ada", "age": "old"}'
    assert "_ollama_raw" in info.value.hint
    messages = body(fake_ollama, "/api/chat")["messages"]
    assert messages[-2] == {"role": "assistant", "content": '{"name": "Ada", "age": "old"}'}
    assert messages[-1]["content"].startswith("That answer was not valid")
    conversation = ipython.magics_manager.registry["OllamaMagics"].workspace.conversations[
        "default"
    ]
    assert len(conversation) == 0, "a failed turn is not recorded"


def test_an_invalid_answer_without_retries_is_one_clear_error(ipython, fake_ollama, capsys):
    fake_ollama.add_reply(".", "nope")
    ipython.user_ns["Person"] = Person
    ipython.run_cell("%%ollama llama3.2 -f Person\nwho?")
    out = plain(capsys.readouterr().out)
    assert "ModelOutputError: The answer is not valid JSON" in out
    assert "Traceback" not in out


def test_unknown_format_names_are_clear(ipython):
    with pytest.raises(OllamaError, match="No variable 'Nobody' for the format"):
        run(ipython, "llama3.2 -f Nobody", "hi")
    with pytest.raises(OllamaError, match="not a valid JSON schema"):
        run(ipython, "llama3.2 -f Bad", "hi", Bad={"type": 12})
    with pytest.raises(UsageError, match="--retries goes with --format"):
        run(ipython, "llama3.2 --retries 2", "hi")


# -- thinking ---------------------------------------------------------------------------------


def test_think_levels_reach_the_request(ipython, fake_ollama):
    for line, expected in (("--think", True), ("--think high", "high"), ("--no-think", False)):
        run(ipython, f"qwen3 {line}", "Why?")
        assert body(fake_ollama)["think"] == expected
    with pytest.raises(UsageError, match="--think takes low, medium, high or max"):
        run(ipython, "qwen3 --think extreme", "Why?")


def test_the_thinking_trace_streams_into_a_collapsed_section_above_the_answer(ipython, fake_ollama):
    fake_ollama.add_reply("why", Reply(text="Because.", thinking="Let me *reason* about it."))
    captured = run(ipython, "qwen3 --think", "why?")
    ids = [o.transient["display_id"] for o in captured.outputs]
    thinking_id = next(
        o.transient["display_id"]
        for o in captured.outputs
        if "ollama-magic-thinking" in o.data["text/html"]
    )
    answer_id = next(
        o.transient["display_id"] for o in captured.outputs if "Because." in o.data["text/html"]
    )
    assert ids.index(thinking_id) < ids.index(answer_id)
    final_thinking = [o for o in captured.outputs if o.transient["display_id"] == thinking_id][-1]
    assert "<summary>Thinking (5 words)</summary>" in final_thinking.data["text/html"]
    assert "<details open" not in final_thinking.data["text/html"], "collapsed by default"
    assert "<em>reason</em>" in final_thinking.data["text/html"]


def test_a_model_that_cannot_think_gives_one_clear_line(ipython):
    with pytest.raises(BadRequest, match=r'"llama3\.2" does not support thinking'):
        run(ipython, "llama3.2 --think", "why?")


def test_only_thinking_and_no_answer_is_said(ipython, fake_ollama):
    fake_ollama.add_reply(
        "long", Reply(text="", thinking=" ".join(["hmm"] * 50), done_reason="length")
    )
    html = run(ipython, "qwen3", "long question").outputs[-1].data["text/html"]
    assert "The model only thought and gave no answer before the token limit" in html


# -- images -----------------------------------------------------------------------------------

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def test_images_from_a_file_bytes_pil_and_numpy(ipython, fake_ollama, tmp_path):
    np = pytest.importorskip("numpy")
    image_module = pytest.importorskip("PIL.Image")
    path = tmp_path / "dot.png"
    path.write_bytes(PNG)
    pil = image_module.new("RGB", (4, 3), (255, 0, 0))
    array = np.zeros((3, 4, 3), dtype=np.uint8)
    captured = run(
        ipython,
        f"llava -i {path} -i raw -i pil -i arr",
        "What is in these?",
        raw=PNG,
        pil=pil,
        arr=array,
    )
    images = body(fake_ollama)["images"]
    assert len(images) == 4 and all("data:" not in i for i in images)
    assert base64.b64decode(images[0]) == PNG == base64.b64decode(images[1])
    decoded = image_module.open(io.BytesIO(base64.b64decode(images[2])))
    assert decoded.size == (4, 3) and decoded.getpixel((0, 0)) == (255, 0, 0)
    assert image_module.open(io.BytesIO(base64.b64decode(images[3]))).size == (4, 3)
    thumbnails = captured.outputs[0].data["text/html"]
    assert thumbnails.count('<img src="data:image/png;base64,') == 4


def test_numpy_arrays_encode_without_pil(monkeypatch):
    np = pytest.importorskip("numpy")
    image_module = pytest.importorskip("PIL.Image")
    from ollama_magic import images

    array = np.arange(12, dtype=float).reshape(3, 4) / 11.0
    monkeypatch.setitem(__import__("sys").modules, "PIL", None)
    encoded = images.png_bytes(array)
    monkeypatch.undo()
    decoded = image_module.open(io.BytesIO(encoded))
    assert decoded.size == (4, 3) and decoded.mode == "L"
    assert decoded.getpixel((0, 0)) == 0 and decoded.getpixel((3, 2)) == 255


def test_images_in_a_chat_go_on_the_user_message(ipython, fake_ollama):
    run(ipython, "llava -c -i raw", "And this?", raw=PNG)
    message = body(fake_ollama, "/api/chat")["messages"][-1]
    assert message["role"] == "user" and base64.b64decode(message["images"][0]) == PNG


def test_a_missing_image_file_is_one_line(ipython, fake_ollama):
    with pytest.raises(OllamaError, match=r"Image file not found: missing/cat\.png"):
        run(ipython, "llava -i missing/cat.png", "what?")
    assert fake_ollama.requests == []


# -- tools ------------------------------------------------------------------------------------

CALLS: list[tuple] = []


def get_weather(city: str, unit: Literal["c", "f"] = "c", days: int | None = None) -> dict:
    """Get the weather for a city.

    Args:
        city: The city name.
        unit: Temperature unit.
        days: How many days ahead.
    """
    CALLS.append((city, unit, days))
    return {"city": city, "temp": 21, "unit": unit}


def forbidden() -> str:
    """Never offered to the model."""
    CALLS.append(("forbidden",))
    return "should never run"


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()


def test_tool_schemas_from_signatures_and_docstrings():
    function = function_tool(get_weather)["function"]
    assert function["description"] == "Get the weather for a city."
    parameters = function["parameters"]
    assert parameters["required"] == ["city"]
    assert parameters["properties"]["unit"] == {
        "type": "string",
        "enum": ["c", "f"],
        "description": "Temperature unit. (default: 'c')",
    }
    assert parameters["properties"]["days"]["type"] == "integer"
    assert parse_docstring(None) == ("", {})


def test_a_tool_call_runs_the_function_and_the_answer_uses_it(ipython, fake_ollama):
    fake_ollama.add_reply(
        "weather", Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}])
    )
    captured = run(
        ipython,
        "llama3.2 --tools get_weather -o answer",
        "weather in Oslo?",
        get_weather=get_weather,
    )
    assert CALLS == [("Oslo", "c", None)]
    first, second = [r.body for r in fake_ollama.requests if r.path == "/api/chat"]
    assert first["tools"][0]["function"]["name"] == "get_weather"
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_name"] == "get_weather"
    assert json.loads(tool_message["content"]) == {"city": "Oslo", "temp": 21, "unit": "c"}
    assert tool_message["tool_call_id"].startswith("call_")
    line = next(o for o in captured.outputs if "ollama-magic-tool" in o.data["text/html"])
    assert "get_weather(city=&#x27;Oslo&#x27;)" in line.data["text/html"]
    assert "get_weather" in ipython.user_ns["answer"], "the answer after the tool is kept"


def test_only_named_functions_can_run_and_errors_go_back_to_the_model(ipython, fake_ollama):
    fake_ollama.add_reply(
        "go",
        Reply(
            tool_calls=[
                {"name": "forbidden", "arguments": {}},
                {"name": "get_weather", "arguments": {"town": "Oslo"}},
                {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "kelvin"}},
            ]
        ),
    )
    run(ipython, "llama3.2 --tools get_weather", "go", get_weather=get_weather, forbidden=forbidden)
    assert CALLS == [], "neither the unnamed function nor bad arguments may run anything"
    results = [
        m["content"] for m in body(fake_ollama, "/api/chat")["messages"] if m["role"] == "tool"
    ]
    assert results[0].startswith("Error: there is no tool named 'forbidden'")
    assert results[1].startswith("Error: bad arguments for get_weather") and "city" in results[1]
    assert results[2].startswith("Error: bad arguments for get_weather") and "kelvin" in results[2]


def test_the_tool_loop_is_bounded(ipython, fake_ollama):
    fake_ollama.add_reply(
        ".", Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "X"}}])
    )
    with pytest.raises(OllamaError, match="still calling tools after 2 rounds"):
        run(
            ipython,
            "llama3.2 --tools get_weather --max-tool-rounds 2",
            "loop",
            get_weather=get_weather,
        )
    assert len(CALLS) == 2


def test_tools_must_name_notebook_functions(ipython):
    with pytest.raises(UsageError, match="no function named 'nope'"):
        run(ipython, "llama3.2 --tools nope", "hi")


# -- from Python ------------------------------------------------------------------------------


def test_the_python_api_returns_objects_runs_tools_and_keeps_conversations(fake_ollama):
    client = Client(fake_ollama.url)
    people = api.ask("People?", "llama3.2", format=list[Person], client=client)
    assert people and all(isinstance(p, Person) for p in people)
    fake_ollama.add_reply(
        "weather", Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Lima"}}])
    )
    text = api.ask("weather in Lima?", "llama3.2", tools=[get_weather], client=client)
    assert CALLS == [("Lima", "c", None)] and "get_weather" in text
    conversation = Conversation()
    api.ask("hello", "llama3.2", conversation=conversation, system="Be brief.", client=client)
    assert [m["role"] for m in conversation.messages] == ["system", "user", "assistant"]
