"""ollama_magic.dask: Dask DataFrames answered partition by partition, over real HTTP.

The stand-in server runs in this process; the cluster's workers are separate processes that
reach it over 127.0.0.1, as workers reach an Ollama server.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
import textwrap
from typing import Literal

import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")
pydantic = pytest.importorskip("pydantic")

import ollama_magic.dask  # noqa: E402
from ollama_magic import OllamaError  # noqa: E402
from ollama_magic.dask import SettingsSnapshot, _workspace, map_partitions  # noqa: E402
from ollama_magic.testing import FakeOllama  # noqa: E402
from ollama_magic.workspace import Workspace, use_workspace  # noqa: E402

CATEGORIES = ["bug", "billing", "other"]
ROWS = 40
SECRET = "sk-do-not-show-123"
PASSWORD = "pw-do-not-show-456"


class Ticket(pydantic.BaseModel):
    category: Literal["bug", "billing", "other"]
    urgency: int


@pytest.fixture(scope="module")
def server():
    with FakeOllama() as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh(server):
    """A fresh log; each answer says which ticket it is for, so alignment can be checked."""
    server.reset()
    server.add_reply(_answer)
    yield


@pytest.fixture(scope="module")
def cluster_client():
    """Two single-threaded worker processes (spawned without the developer's Ollama settings)."""
    with pytest.MonkeyPatch.context() as env:
        for name in ("OLLAMA_HOST", "OLLAMA_API_KEY", "OLLAMA_MODEL"):
            env.delenv(name, raising=False)
        cluster = distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        )
    try:
        with distributed.Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def _answer(request):
    """`Classify: ticket 7` → a plain answer naming 7, or (with a format) JSON built from 7;
    ticket numbers ending in 3 get text that is no JSON, so those rows fail."""
    number = int(re.search(r"ticket (\d+)", request.prompt).group(1))
    if request.body.get("format") is None:
        return f"answer for ticket {number}"
    if number % 10 == 3:
        return "I cannot classify this one."
    return json.dumps({"category": CATEGORIES[number % 3], "urgency": number})


def _tickets(rows=ROWS):
    # A labelled, non-default index: alignment must hold for it, not only for 0..n-1.
    index = pd.Index([f"T{n:03d}" for n in range(rows)], name="ticket_id")
    return pd.DataFrame({"text": [f"ticket {n}" for n in range(rows)]}, index=index)


def _generate_requests(server):
    return [r for r in server.requests if r.path == "/api/generate"]


def _name(collection):
    return collection.__dask_keys__()[0][0]


def _workspace_of(server, **settings):
    return Workspace(host=server.url, **settings)


# -- on a cluster of worker processes --------------------------------------------------------


def test_cluster_answers_every_row_aligned_with_the_input(server, cluster_client):
    tickets = _tickets()
    ddf = dd.from_pandas(tickets, npartitions=4)
    cluster_client.run(_workspace.cache_clear)

    labelled = map_partitions(
        ddf, "Classify: {text}", model="llama3.2", workspace=_workspace_of(server)
    )
    assert _generate_requests(server) == []  # lazy: nothing answered before compute
    result = labelled.compute()

    assert result.index.equals(tickets.index)
    assert result["text"].tolist() == tickets["text"].tolist()
    assert result["answer"].tolist() == [f"answer for ticket {n}" for n in range(ROWS)]
    assert result["error"].isna().all() and set(result["error"].tolist()) == {None}
    generated = _generate_requests(server)
    assert len(generated) == ROWS
    assert {r.body["model"] for r in generated} == {"llama3.2"}
    # Each worker process built one workspace for the snapshot and reused it afterwards.
    caches = cluster_client.run(_workspace.cache_info).values()
    assert sum(c.hits + c.misses for c in caches) == 4  # one call per partition
    assert sum(c.misses for c in caches) <= 2  # one build per worker process


def test_cluster_workers_use_the_model_chosen_in_the_kernel(server, cluster_client):
    ddf = dd.from_pandas(_tickets(8), npartitions=2)

    # Settings of its own: no worker has a workspace for them yet (nor a model chosen).
    workspace = _workspace_of(server, timeout=123)
    labelled = map_partitions(ddf, "Classify: {text}", workspace=workspace)
    server.add_model("newer")  # now the newest: a worker choosing for itself would take it
    result = labelled.compute()

    assert result["error"].isna().all()
    assert {r.body["model"] for r in _generate_requests(server)} == {"llama3.2:latest"}


def test_cluster_typed_columns_from_a_pydantic_format(server, cluster_client):
    ddf = dd.from_pandas(_tickets(), npartitions=4)

    labelled = map_partitions(
        ddf, "Classify: {text}", format=Ticket, model="llama3.2", workspace=_workspace_of(server)
    )

    expected = pd.CategoricalDtype(CATEGORIES)
    # Declared in meta: Dask knows the schema before anything runs.
    assert list(labelled.columns) == ["text", "category", "urgency", "error"]
    assert labelled.dtypes["category"] == expected
    assert labelled.dtypes["urgency"] == "Int64"
    assert _generate_requests(server) == []
    result = labelled.compute()

    assert result["category"].dtype == expected
    assert result["urgency"].dtype == "Int64"
    answered = [n for n in range(ROWS) if n % 10 != 3]
    rows = result.iloc[answered]
    assert rows["category"].tolist() == [CATEGORIES[n % 3] for n in answered]
    assert rows["urgency"].tolist() == answered
    assert rows["error"].isna().all()
    assert len(_generate_requests(server)) == ROWS


def test_cluster_failed_rows_keep_their_error(server, cluster_client):
    ddf = dd.from_pandas(_tickets(), npartitions=4)

    result = map_partitions(
        ddf, "Classify: {text}", format=Ticket, model="llama3.2", workspace=_workspace_of(server)
    ).compute()

    failed = result[result["error"].notna()]
    assert failed.index.tolist() == [f"T{n:03d}" for n in range(ROWS) if n % 10 == 3]
    assert all(e.startswith("ModelOutputError: ") for e in failed["error"])
    assert failed["urgency"].isna().all() and failed["category"].isna().all()


def test_cluster_secrets_travel_with_the_tasks_but_never_show(server, cluster_client):
    host = server.url.replace("http://", f"http://ada:{PASSWORD}@")
    workspace = Workspace(host=host, headers={"Authorization": f"Bearer {SECRET}"})
    ddf = dd.from_pandas(_tickets(8), npartitions=2)

    labelled = map_partitions(ddf, "Classify: {text}", model="llama3.2", workspace=workspace)

    graph = dict(labelled.__dask_graph__())
    tasks = [t for k, t in graph.items() if k[0].startswith("ollama_map-")]
    assert len(tasks) == 2
    (snapshot,) = {a for t in tasks for a in t.args if isinstance(a, SettingsSnapshot)}
    shown = [repr(snapshot), str(snapshot), str(list(graph))]
    shown += [repr(t) + repr(t.args) + repr(t.kwargs) for t in tasks]
    for text in shown:
        assert SECRET not in text and PASSWORD not in text
    assert "'Authorization': 'Bearer ****'" in repr(snapshot)
    assert "ada:****@" in repr(snapshot)
    # Yet the workers sent them.
    result = labelled.compute()
    assert result["error"].isna().all()
    generated = _generate_requests(server)
    assert len(generated) == 8
    assert {r.headers["Authorization"] for r in generated} == {f"Bearer {SECRET}"}


def test_cluster_the_kernels_api_key_reaches_workers_without_it(
    server, cluster_client, monkeypatch
):
    # The workers were started without OLLAMA_API_KEY, as remote workers are.
    monkeypatch.setenv("OLLAMA_API_KEY", SECRET)
    ddf = dd.from_pandas(_tickets(4), npartitions=2)

    labelled = map_partitions(
        ddf, "Classify: {text}", model="llama3.2", workspace=_workspace_of(server)
    )

    assert SECRET not in str(dict(labelled.__dask_graph__()))
    assert labelled.compute()["error"].isna().all()
    generated = _generate_requests(server)
    assert len(generated) == 4
    assert {r.headers["Authorization"] for r in generated} == {f"Bearer {SECRET}"}


def test_a_password_in_the_host_goes_before_the_kernels_api_key(server, monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", SECRET)
    with_password = Workspace(host=server.url.replace("http://", f"http://ada:{PASSWORD}@"))

    assert SettingsSnapshot.capture(with_password, model="llama3.2").headers == {}
    snapshot = SettingsSnapshot.capture(_workspace_of(server, concurrency=3), model="llama3.2")
    assert snapshot.headers == {"Authorization": f"Bearer {SECRET}"}
    assert snapshot.concurrency == 3
    assert snapshot.workspace().headers == {"Authorization": f"Bearer {SECRET}"}


def _recipe() -> str:
    """The code block of the module's docstring, as a user would copy it."""
    doc = ollama_magic.dask.__doc__
    block = doc.split("::\n", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip()


def test_cluster_the_documented_recipe_works_as_written(server, cluster_client, monkeypatch):
    recipe = _recipe()
    assert "map_partitions(" in recipe and recipe.endswith("labelled.compute()")
    *statements, last = recipe.splitlines()
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    use_workspace(None)  # the default workspace is made afresh, from OLLAMA_HOST
    # Run as a notebook runs it: Ticket is defined in __main__, where workers cannot import it
    # from, so it must travel by value.
    namespace = {"__name__": "__main__", "tickets": _tickets()}
    try:
        # dont_inherit: not this module's `from __future__ import annotations`.
        exec(compile("\n".join(statements), "<recipe>", "exec", dont_inherit=True), namespace)
        with pytest.raises(pickle.PicklingError):
            pickle.dumps(namespace["Ticket"])
        result = eval(compile(last, "<recipe>", "eval", dont_inherit=True), namespace)
    finally:
        use_workspace(None)

    assert result.index.equals(namespace["tickets"].index)
    assert result["category"].dtype == pd.CategoricalDtype(CATEGORIES)
    assert result["urgency"].dtype == "Int64"
    assert result["error"].notna().sum() == 4  # tickets 3, 13, 23, 33
    assert len(_generate_requests(server)) == ROWS


# -- the default (threaded) scheduler, in this process ---------------------------------------


def test_threaded_scheduler_and_template_variables(server, capsys):
    ddf = dd.from_pandas(_tickets(12), npartitions=3)
    greeting = "Please"  # a notebook variable: it goes with the tasks, not the namespace

    labelled = map_partitions(
        ddf,
        "{greeting}. Classify: {text}",
        model="llama3.2",
        workspace=_workspace_of(server),
        namespace={"greeting": greeting, "unpicklable": (n for n in ())},
    )
    (task,) = [t for k, t in labelled.__dask_graph__().items() if k == (_name(labelled), 0)]
    assert task.args[-1]["namespace"] == {"greeting": "Please"}  # only what the template uses
    result = labelled.compute(scheduler="threads")

    assert result["answer"].tolist() == [f"answer for ticket {n}" for n in range(12)]
    assert result["error"].isna().all()
    assert capsys.readouterr() == ("", "")  # no progress bar per partition
    prompts = sorted(r.prompt for r in _generate_requests(server))
    assert prompts == sorted(f"Please. Classify: ticket {n}" for n in range(12))


def test_a_frame_with_an_answer_column_can_take_another_column(server):
    frame = _tickets(4).assign(answer="kept")  # the user's own column, untouched by into=
    labelled = map_partitions(
        dd.from_pandas(frame, npartitions=2),
        "Classify: {text}",
        model="llama3.2",
        into="label",
        workspace=_workspace_of(server),
    )
    result = labelled.compute(scheduler="threads")
    assert result["answer"].tolist() == ["kept"] * 4
    assert result["label"].tolist() == [f"answer for ticket {n}" for n in range(4)]


def test_a_missing_model_fails_at_call_time(server):
    ddf = dd.from_pandas(_tickets(8), npartitions=2)

    with pytest.raises(OllamaError, match="does not have no-such-model"):
        map_partitions(
            ddf, "Classify: {text}", model="no-such-model", workspace=_workspace_of(server)
        )
    assert _generate_requests(server) == []


def test_a_server_without_the_model_fails_at_call_time(server, dead_url):
    ddf = dd.from_pandas(_tickets(8), npartitions=2)

    with pytest.raises(OllamaError, match="Nothing was sent"):
        map_partitions(
            ddf,
            "Classify: {text}",
            model="llama3.2",
            hosts=[server.url, dead_url],
            workspace=_workspace_of(server),
        )
    assert _generate_requests(server) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"template": "Classify: {txt}"}, r"\{txt\} names nothing in the rows"),
        ({"options": {"temperature": "hot"}}, "temperature must be a number"),
        ({"think": "very"}, "think takes"),
        ({"concurrency": 0}, "concurrency must be from 1"),
        ({"resume": None}, "does not take resume"),
    ],
)
def test_bad_arguments_fail_at_call_time(server, arguments, message):
    ddf = dd.from_pandas(_tickets(8), npartitions=2)
    template = arguments.pop("template", "Classify: {text}")

    with pytest.raises(OllamaError, match=message):
        map_partitions(
            ddf, template, model="llama3.2", workspace=_workspace_of(server), **arguments
        )
    assert _generate_requests(server) == []


def test_a_pandas_frame_is_refused_with_the_way_to_make_a_dask_one(server):
    with pytest.raises(OllamaError, match="takes a Dask DataFrame") as raised:
        map_partitions(_tickets(), "Classify: {text}", workspace=_workspace_of(server))
    assert "dd.from_pandas" in raised.value.hint


def test_without_dask_the_module_imports_and_the_call_says_what_to_install(server, monkeypatch):
    # The module imports without Dask (it is an optional dependency) ...
    script = "import sys; sys.modules['dask'] = None; import ollama_magic.dask"
    subprocess.run([sys.executable, "-c", script], check=True)
    # ... and the call says how to get it.
    monkeypatch.setitem(sys.modules, "dask.dataframe", None)
    with pytest.raises(OllamaError) as raised:
        map_partitions(object(), "Classify: {text}", workspace=_workspace_of(server))
    assert raised.value.hint == "pip install 'ollama-magic[dask]'"
    assert server.requests == []
