"""Information and model-management endpoints: /, version, tags, ps, show, pull, push, delete,
copy."""

from __future__ import annotations

from ollama_magic.testing.catalog import DEFAULT_HOST, DEFAULT_NAMESPACE, parse_model_name
from ollama_magic.testing.connection import RequestHandler
from ollama_magic.testing.decoding import decode_request
from ollama_magic.testing.gojson import go_quote
from ollama_magic.testing.layers import PULL_SHARES, pull_progress, push_progress
from ollama_magic.testing.progress import Failure, Step, send_progress
from ollama_magic.testing.records import RecordedRequest
from ollama_magic.testing.streaming import StreamWriter
from ollama_magic.testing.wire import JSON_PLAIN, ApiError

VERSION = "0.33.0"


def root(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`GET|HEAD /`."""
    handler.respond_bytes(200, "text/plain; charset=utf-8", b"Ollama is running")


def version(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`GET|HEAD /api/version`."""
    handler.respond_json(200, {"version": VERSION})


def tags(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`GET|HEAD /api/tags`: installed models, most recently modified first."""
    handler.respond_json(200, {"models": [spec.tags_entry() for spec in handler.state.models]})


def ps(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`GET /api/ps`: loaded models, latest expiry first."""
    handler.respond_json(200, {"models": handler.state.ps_entries()})


def show(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/show`."""
    fields = {
        "model": "string",
        "name": "string",
        "system": "string",
        "template": "string",
        "verbose": "bool",
        "options": "object",
    }
    request = decode_request(record.raw_body, "ShowRequest", fields)
    name = request.get("model") or request.get("name") or ""
    if not name:
        raise ApiError(400, "model is required")
    handler.respond_json(200, handler.state.local_model(name).show())


#: The fields of `api.PullRequest` and `api.PushRequest` (the same struct shape).
_TRANSFER_FIELDS = {
    "model": "string",
    "name": "string",
    "insecure": "bool",
    "stream": "bool",
    "username": "string",
    "password": "string",
}


def pull(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/pull`: progress lines (at the server's `pull_seconds` pace), then the model
    is installed."""
    request = decode_request(record.raw_body, "PullRequest", _TRANSFER_FIELDS)
    name = request.get("model") or request.get("name") or ""
    parsed = parse_model_name(name)
    if parsed is None:
        raise ApiError(400, "invalid model name")
    stream = request.get("stream", True)
    remote = handler.state.remote_lookup(parsed)
    if remote is None:
        message = "pull model manifest: file does not exist"
        if not stream:
            raise ApiError(500, message, JSON_PLAIN)
        writer = StreamWriter(handler)
        writer.start()
        writer.line({"status": "pulling manifest"})
        writer.line({"error": message})
        writer.end()
        return
    local = handler.state.lookup(parsed)
    present = local is not None and local.digest == remote.digest
    seconds = handler.state.pull_seconds
    plan = pull_progress(remote, present, seconds)
    last_pause = PULL_SHARES[-1] * seconds  # writing the manifest, before "success"
    if not stream:
        handler.load(sum(pause for pause, _ in plan) + last_pause)  # as long, without lines
        handler.state.install(remote.renamed(parsed.display))
        handler.respond_json(200, {"status": "success"}, JSON_PLAIN)
        return
    writer = StreamWriter(handler)
    writer.start()
    for pause, line in plan:
        handler.load(pause)
        handler.check_client()
        writer.line(line)
    handler.load(last_pause)
    # Installed only once complete: a client that leaves part way gets no model.
    handler.state.install(remote.renamed(parsed.display))
    writer.line({"status": "success"})
    writer.end()


def delete(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`DELETE /api/delete`: 200 with an empty body."""
    request = decode_request(
        record.raw_body, "DeleteRequest", {"model": "string", "name": "string"}
    )
    name = request.get("model") or request.get("name") or ""
    parsed = parse_model_name(name)
    if parsed is None:
        raise ApiError(400, f"name {go_quote(name)} is invalid")
    if not handler.state.delete(parsed):
        raise ApiError(404, f"model '{name}' not found")
    handler.respond_bytes(200, None, b"")


def copy(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/copy`: 200 with an empty body."""
    request = decode_request(
        record.raw_body, "CopyRequest", {"source": "string", "destination": "string"}
    )
    source = request.get("source", "")
    destination = request.get("destination", "")
    parsed_source = parse_model_name(source)
    if parsed_source is None:
        raise ApiError(400, f"source {go_quote(source)} is invalid")
    parsed_destination = parse_model_name(destination)
    if parsed_destination is None:
        raise ApiError(400, f"destination {go_quote(destination)} is invalid")
    spec = handler.state.lookup(parsed_source)
    if spec is None:
        raise ApiError(404, f"model {go_quote(source)} not found")
    handler.state.install(spec.renamed(parsed_destination.display))
    handler.respond_bytes(200, None, b"")


def push(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/push`: upload progress (at the `pull_seconds` pace), then the model is in
    the stand-in's registry, for `/api/pull`.

    Follows `PushHandler` (server/routes.go) and `PushModel` (server/images.go): a model that
    is not installed fails reading its manifest; a name in no namespace of one's own (plain
    `mario` is `library/mario`) uploads its blobs, then the registry refuses the manifest
    (`unauthorized: access denied`, `errUnauthorized` after the retried 401; the CLI turns it
    into "you are not authorized to push to this namespace, create the model under a
    namespace you own").
    """
    request = decode_request(record.raw_body, "PushRequest", _TRANSFER_FIELDS)
    name = request.get("model") or request.get("name") or ""
    if not name:
        raise ApiError(400, "model is required")
    state = handler.state
    seconds = state.pull_seconds
    steps: list[Step] = []
    parsed = parse_model_name(name)
    spec = state.lookup(parsed) if parsed is not None else None
    if parsed is None or spec is None:
        steps.append((0.0, {"status": "retrieving manifest"}))
        steps += [(0.0, {"status": "couldn't retrieve manifest"}), (0.0, _no_manifest(name))]
    else:
        steps.extend(push_progress(spec, seconds))
        if parsed.namespace == DEFAULT_NAMESPACE and parsed.host == DEFAULT_HOST:
            steps.append((0.0, Failure("unauthorized: access denied")))
        else:
            steps.append((PULL_SHARES[-1] * seconds, lambda: state.add_remote(spec)))
            steps.append((0.0, {"status": "success"}))
    send_progress(handler, steps, stream=request.get("stream", True))


def _no_manifest(name: str) -> Failure:
    """`manifest.ParseNamedManifest`'s error for a model that is not installed: the manifest
    file cannot be opened (or, for an invalid name, `model.Unqualified`)."""
    parsed = parse_model_name(name)
    if parsed is None:
        rest, tag = name, "latest"
        if ":" in name.rpartition("/")[2]:
            rest, _, tag = name.rpartition(":")
        parts = rest.split("/")
        padded = [DEFAULT_HOST, DEFAULT_NAMESPACE][: max(0, 3 - len(parts))] + parts
        return Failure(f"unqualified name: {padded[0]}/{padded[1]}/{padded[-1]}:{tag}")
    path = f"{parsed.host}/{parsed.namespace}/{parsed.model}/{parsed.tag}"
    return Failure(f"open /root/.ollama/models/manifests/{path}: no such file or directory")
