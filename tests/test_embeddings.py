"""ollama_magic.embed, nearest and ``%ollama embed``, over real HTTP. The stand-in's vectors
(a bag of word vectors: shared words, similar texts) are unit length, one per input, as Ollama's;
what an adapter may do instead (any length, too few, a dropped connection) a small server does.
"""

from __future__ import annotations

import json
import re
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError

from ollama_magic import Client, OllamaError, admin, data_commands
from ollama_magic.embeddings import embed, nearest
from ollama_magic.testing import FakeOllama, Fault
from ollama_magic.workspace import Workspace, default_workspace

TIMES = "\N{MULTIPLICATION SIGN}"
MODEL = "all-minilm"  # an embedding model the stand-in has (384 numbers a vector)
TEXTS = [f"ticket {i}: the printer on floor {i % 7} is jammed" for i in range(10)]


def embeds(server) -> list[list[str]]:
    """The inputs of each /api/embed request the server received."""
    return [r.body["input"] for r in server.requests if r.path == "/api/embed"]


def one_by_one(server, texts: list[str]) -> np.ndarray:
    """Each text embedded in a request of its own: what each row must equal."""
    with Client(server.url) as client:
        return np.array([client.embed(MODEL, [text])[0] for text in texts], dtype=np.float32)


def run(servers, texts, model: str | None = MODEL, **options) -> np.ndarray:
    """embed() over a server (or a tuple of them), with no progress unless asked."""
    hosts = [s.url for s in (servers if isinstance(servers, tuple) else (servers,))]
    ws = Workspace(host=hosts[0], hosts=hosts if len(hosts) > 1 else [])
    return embed(texts, model, **{"progress": False, "workspace": ws, **options})


def test_one_float32_row_per_text_in_order_each_sent_once_in_batches(fake_ollama):
    vectors = run(fake_ollama, TEXTS, batch_size=3, concurrency=2)
    assert vectors.shape == (10, 384) and vectors.dtype == np.float32
    batches = embeds(fake_ollama)
    assert len(batches) == 4  # ceil(10 / 3)
    assert sorted(batches) == sorted(TEXTS[i : i + 3] for i in range(0, 10, 3))
    assert np.array_equal(vectors, one_by_one(fake_ollama, TEXTS))


def test_two_servers_share_the_batches_and_give_the_same_array():
    texts = [f"note {i} about the {['printer', 'lunch', 'budget'][i % 3]}" for i in range(80)]
    with FakeOllama() as a, FakeOllama() as b:
        both = run((a, b), texts, batch_size=2)
        assert embeds(a) and embeds(b), "each server embedded some batches"
        assert sorted(embeds(a) + embeds(b)) == sorted(texts[i : i + 2] for i in range(0, 80, 2))
        alone = run(a, texts, batch_size=2)
    assert np.array_equal(both, alone)


def test_a_series_is_embedded_by_position(fake_ollama):
    series = pd.Series(["the printer is broken", "lunch menu", "budget"], index=[30, 10, 20])
    vectors = run(fake_ollama, series, batch_size=2)
    assert np.array_equal(vectors, one_by_one(fake_ollama, list(series.iloc[[0, 1, 2]])))


def test_no_model_named_takes_the_newest_embedding_model(fake_ollama):
    fake_ollama.add_model("my-embedder", capabilities=("embedding",), embedding_length=16)
    assert run(fake_ollama, ["hello"], model=None).shape == (1, 16)
    assert fake_ollama.last_request("/api/embed").model == "my-embedder:latest"


def test_no_texts_give_an_empty_array_as_wide_as_the_model(fake_ollama):
    vectors = run(fake_ollama, [])
    assert vectors.shape == (0, 384) and vectors.dtype == np.float32
    assert not embeds(fake_ollama)


def test_the_options_and_keep_alive_are_sent(fake_ollama):
    ws = Workspace(host=fake_ollama.url, options={"num_ctx": 512}, keep_alive="10m")
    embed(["a"], MODEL, keep_alive=0, dimensions=8, progress=False, workspace=ws)
    body = fake_ollama.last_request("/api/embed").body
    assert (body["options"], body["keep_alive"], body["dimensions"]) == ({"num_ctx": 512}, 0, 8)


def test_the_progress_counts_texts_and_each_servers_share_when_there_are_batches(capsys):
    with FakeOllama() as a, FakeOllama() as b:
        run((a, b), TEXTS, batch_size=3, progress=True)
        shares = {s.url.split("://")[1]: sum(map(len, embeds(s))) for s in (a, b)}
        summary, hosts = capsys.readouterr().out.splitlines()
        run(a, TEXTS, batch_size=10, progress=True)  # one request: no bar, no summary
    assert re.fullmatch(r"10 texts in \d+\.\d s · 10 answered · [\d,.]+ texts/s", summary)
    assert hosts == " · ".join(f"{host}: {done} done" for host, done in shares.items())
    assert capsys.readouterr().out == ""


def test_a_server_without_the_model_stops_the_call_before_any_text_goes():
    with FakeOllama() as a, FakeOllama() as b:
        b.remove_model(MODEL)
        with pytest.raises(OllamaError) as caught:
            run((a, b), TEXTS)
        assert f"{b.url} does not have {MODEL}" in caught.value.message
        assert a.url not in caught.value.message
        assert not embeds(a) and not embeds(b)


def test_no_embedding_model_at_all_says_what_to_pull(fake_ollama):
    fake_ollama.remove_model(MODEL)
    with pytest.raises(OllamaError) as caught:
        run(fake_ollama, TEXTS, model=None)
    assert "no embedding model" in caught.value.message
    assert "%ollama pull nomic-embed-text" in caught.value.hint
    assert not embeds(fake_ollama)


@pytest.mark.parametrize(
    "texts, said",
    [
        (["fine", None], "NoneType at 1"),
        (pd.Series(["fine", float("nan")], index=["a", "b"]), "float at 'b'"),
        (pd.DataFrame({"text": ["fine"]}), "a DataFrame"),
    ],
)
def test_anything_but_strings_is_refused_before_anything_is_sent(fake_ollama, texts, said):
    with pytest.raises(OllamaError, match=re.escape(said)):
        run(fake_ollama, texts)
    assert not fake_ollama.requests


def test_a_failed_request_is_raised_and_the_rest_are_not_sent(fake_ollama):
    fake_ollama.inject(Fault(status=500, error="out of memory"), endpoint="/api/embed", times=1)
    with pytest.raises(OllamaError, match="out of memory"):
        run(fake_ollama, TEXTS, batch_size=2, concurrency=1)
    assert len(embeds(fake_ollama)) == 1


class Adapter(ThreadingHTTPServer):
    """A server speaking just enough of the API (tags, show, embed) for an embedding model,
    "adapted", whose vectors are ``vectors(texts)`` (None: the connection is closed without
    an answer, as when a server goes away)."""

    def __init__(self, vectors) -> None:
        super().__init__(("127.0.0.1", 0), _AdapterHandler)
        self.vectors, self.embeds = vectors, []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> Adapter:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()
        self.server_close()


class _AdapterHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Ollama's server

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.answer({"models": [{"name": "adapted:latest", "capabilities": ["embedding"]}]})

    def do_POST(self) -> None:
        texts = json.loads(self.rfile.read(int(self.headers["Content-Length"]))).get("input")
        if self.path == "/api/show":
            return self.answer({"capabilities": ["embedding"]})
        self.server.embeds.append(texts)
        vectors = self.server.vectors(texts)
        self.close_connection = vectors is None
        return None if vectors is None else self.answer({"embeddings": vectors})

    def answer(self, data) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_normalize_gives_unit_rows_and_zero_stays_zero():
    def vectors(texts):
        return [[0.0, 0.0] if text == "zero" else [3.0, 4.0] for text in texts]

    with Adapter(vectors) as adapter:
        raw = run(adapter, ["a", "zero", "b"], "adapted")
        unit = run(adapter, ["a", "zero", "b"], "adapted", normalize=True)
    assert raw.tolist() == [[3, 4], [0, 0], [3, 4]]
    assert np.allclose(unit, [[0.6, 0.8], [0, 0], [0.6, 0.8]])
    assert unit.dtype == np.float32


def test_too_few_vectors_is_an_error_naming_the_server():
    with Adapter(lambda texts: [[1.0, 0.0]]) as adapter, pytest.raises(OllamaError) as caught:
        run(adapter, ["a", "b"], "adapted")
    assert caught.value.message == f"{adapter.url} answered 1 vectors for 2 texts."


def test_batches_of_a_server_that_went_away_are_embedded_by_another(fake_ollama):
    with Adapter(lambda texts: None) as gone:
        texts = TEXTS * 4  # the adapter says it has any model it is asked for:
        vectors = run((fake_ollama, gone), texts, batch_size=2)
    assert gone.embeds, "the adapter was sent batches"
    assert sorted(embeds(fake_ollama)) == sorted(texts[i : i + 2] for i in range(0, 40, 2))
    assert np.array_equal(vectors, one_by_one(fake_ollama, texts))


def test_ctrl_c_says_how_many_texts_were_embedded():
    main = threading.get_ident()

    def vectors(texts):
        if len(adapter.embeds) == 3:  # as a kernel interrupt does, while a request is out
            signal.pthread_kill(main, signal.SIGINT)
        return [[1.0, 0.0]] * len(texts)

    with Adapter(vectors) as adapter, pytest.raises(KeyboardInterrupt) as caught:
        run(adapter, ["a"] * 6, "adapted", batch_size=1, concurrency=1)
    (line,) = caught.value._render_traceback_()
    assert re.fullmatch(r"Interrupted: [2-6] of 6 texts were embedded; none are kept\.", line)


# -- nearest ------------------------------------------------------------------------------------


def test_nearest_finds_the_near_duplicate(fake_ollama):
    texts = ["the printer is broken", "quarterly budget review", "my printer is broken again"]
    vectors = run(fake_ollama, [*texts, "what is for lunch on friday"])
    rows, similarity = nearest(vectors[0], vectors, k=2)
    assert rows.tolist() == [0, 2]
    assert similarity[0] == pytest.approx(1.0, abs=1e-5)
    assert similarity[1] > 0.5 > max(vectors[[1, 3]] @ vectors[0])


def test_nearest_agrees_with_a_full_sort_whether_or_not_rows_are_normalised():
    rng = np.random.default_rng(7)
    matrix = rng.normal(size=(200, 16)).astype(np.float32) * rng.uniform(0.1, 9, (200, 1))
    queries = rng.normal(size=(3, 16)).astype(np.float32)
    rows, similarity = nearest(queries, matrix, k=5)
    cosine = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    ).T
    assert rows.shape == similarity.shape == (3, 5)
    assert rows.tolist() == np.argsort(-cosine, axis=1)[:, :5].tolist()
    assert np.allclose(similarity, np.take_along_axis(cosine, rows, 1), atol=1e-6)


def test_nearest_clips_k_keeps_zero_rows_at_zero_and_refuses_other_lengths():
    rows, similarity = nearest([1.0, 0.0], [[0.0, 0.0], [2.0, 0.0]], k=10)
    assert (rows.tolist(), similarity.tolist()) == ([1, 0], [1.0, 0.0])
    with pytest.raises(OllamaError, match="shapes"):
        nearest(np.ones(3), np.ones((4, 2)))


# -- %ollama embed ------------------------------------------------------------------------------


def run_command(*words: str) -> None:
    line = admin.Line(default_workspace(), rich=False, usage="")
    data_commands.embed_command(line, list(words))


def test_the_command_binds_the_array_and_says_what_it_made(ipython, fake_ollama, capsys):
    ipython.user_ns["tickets"] = pd.DataFrame({"text": TEXTS})
    run_command(MODEL, "--in", "tickets.text", "-o", "vectors", "--batch-size", "4")
    assert len(embeds(fake_ollama)) == 3
    assert np.array_equal(ipython.user_ns["vectors"], one_by_one(fake_ollama, TEXTS))
    said = rf"Embedded 10 texts with {MODEL}: 10 {TIMES} 384 float32 in vectors \(3 requests of 4,"
    line = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(said + r" \d+\.\d s\)", line), line


def test_the_command_names_the_model_it_chose_and_normalises(ipython, fake_ollama, capsys):
    ipython.user_ns["texts"] = ["one text"]
    run_command("--in", "texts", "-o", "v", "--normalize")
    assert capsys.readouterr().out.startswith(
        f"Embedded 1 text with {MODEL}:latest: 1 {TIMES} 384 float32 unit vectors in v (1 request, "
    )


@pytest.mark.parametrize(
    "words, said",
    [
        (["--in", "nowhere", "-o", "v"], "'nowhere' is not a notebook variable"),
        (["--in", "texts.missing", "-o", "v"], "'texts.missing' is not a notebook variable"),
        (["--in", "texts", "-o", "not a name"], "-o takes a variable name"),
        (["--in", "texts"], "-o"),
    ],
)
def test_the_command_refuses_what_it_cannot_use(ipython, fake_ollama, words, said):
    ipython.user_ns["texts"] = ["one text"]
    with pytest.raises(UsageError, match=re.escape(said)):
        run_command(*words)
    assert not embeds(fake_ollama)


def test_the_command_takes_a_dataframe_column_as_written_in_python(ipython, fake_ollama):
    ipython.user_ns["tickets"] = pd.DataFrame({"text": TEXTS})
    run_command(MODEL, "--in", "tickets['text']", "-o", "vectors")
    assert np.array_equal(ipython.user_ns["vectors"], one_by_one(fake_ollama, TEXTS))
