"""`POST /api/create`: a model made from an installed one (`from`) or from uploaded GGUF blobs
(`files`), with a system prompt, template, parameters, messages, license or adapter of its own,
or quantized.

The job follows `CreateHandler` and `createModel` in server/create.go (v0.2x, the version with
create-time GGUF quantization): request checks answered before streaming; then the base
layers (`using existing layer sha256:…`, pulling a `from` model that is not installed), the
quantization (`quantizing F16 model to Q4_K_M` progress, `verifying conversion`), a new layer
for each of template, system, license, parameters and messages (`creating new layer
sha256:…`, or `using existing layer` when the server already holds that blob), `writing
manifest`, `success`. Where the real job sends `{"error", "status"}`, the status applies when
no line has gone out yet (see progress.py).

Simplified: uploaded GGUF files are taken to hold an F16 model (no metadata is parsed), and
safetensors are "converted" without looking inside.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from ollama_magic.testing.blobs import blob_key, blob_path
from ollama_magic.testing.catalog import Layer, ModelName, ModelSpec, parse_model_name, sha256_hex
from ollama_magic.testing.connection import RequestHandler
from ollama_magic.testing.decoding import decode_request
from ollama_magic.testing.gojson import go_json, json_kind
from ollama_magic.testing.layers import (
    PULL_SHARES,
    layers_for,
    progress_steps,
    pull_progress,
    text_layer,
)
from ollama_magic.testing.progress import Failure, Step, send_progress
from ollama_magic.testing.records import RecordedRequest
from ollama_magic.testing.state import Blob, ServerState
from ollama_magic.testing.wire import ApiError

# The JSON fields of api.CreateRequest (api/types.go) and how each decodes (decoding.py).
CREATE_FIELDS = {
    "model": "string",
    "name": "string",  # deprecated spelling of model
    "from": "string",
    "files": "map[string]string",
    "adapters": "map[string]string",
    "template": "string",
    "license": "any",
    "system": "string",
    "parameters": "object",
    "messages": "messages",
    "stream": "bool",
    "quantize": "string",
    "quantization": "string",  # deprecated spelling of quantize
}

# Bits per weight of each type create accepts (for the size of a quantized layer). The real
# `ggml.ParseFileType` (fs/ggml/type.go) takes F32, F16, BF16, Q8_0, Q4_K_S and Q4_K_M (alias
# Q4_K); the rest are the llama.cpp types docs/import.md lists, which older servers
# (`llm.ParseFileType`) accepted too.
QUANT_BITS = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.56,
    "Q5_K_M": 5.69,
    "Q5_K_S": 5.54,
    "Q5_1": 6.0,
    "Q5_0": 5.5,
    "Q4_K_M": 4.85,
    "Q4_K_S": 4.58,
    "Q4_1": 5.0,
    "Q4_0": 4.5,
    "Q3_K_L": 4.27,
    "Q3_K_M": 3.91,
    "Q3_K_S": 3.5,
    "Q2_K": 2.96,
}
QUANT_ALIASES = {"Q4_K": "Q4_K_M"}
# fs/ggml/type.go ParseFileType's error, its list as the real server prints it.
UNSUPPORTED_QUANT = (
    "unsupported quantization type {} - supported types are F32, F16, Q4_K_S, Q4_K_M, Q8_0"
)
# server/create.go createModel.
NOT_QUANTIZABLE = "quantization is only supported for F16, BF16 and F32 models"
QUANTIZE_DIGEST = "0000000000000000000"  # what rewriteLayerWithLlamaQuantize reports
UPLOADED_FILE_TYPE = "F16"  # what an uploaded GGUF is taken to hold


def create(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/create`: status lines (see the module doc), then the model is installed."""
    request = decode_request(record.raw_body, "CreateRequest", CREATE_FIELDS)
    for path, digest in (request.get("files") or {}).items():
        if not _valid_path(path):
            raise ApiError(400, "file path must be relative")  # errFilePath
        if not digest:
            raise ApiError(400, "invalid digest format")  # manifest.ErrInvalidDigestFormat
    if any(not digest for digest in (request.get("adapters") or {}).values()):
        raise ApiError(400, "invalid digest format")
    parsed = parse_model_name(request.get("model") or request.get("name") or "")
    if parsed is None:
        raise ApiError(400, "invalid model name")  # errtypes.InvalidModelNameErrMsg
    steps = _Job(handler.state, request, parsed).plan()
    send_progress(handler, steps, stream=request.get("stream", True))


def _valid_path(path: str) -> bool:
    """Go's `fs.ValidPath`: a relative, slash-separated path without `.`/`..`/empty parts."""
    if path == ".":
        return True
    return bool(path) and all(part not in ("", ".", "..") for part in path.split("/"))


def human_number(count: int) -> str:
    """A parameter count as Go's `format.HumanNumber` writes it.

    >>> human_number(3_212_749_888), human_number(999_885_952), human_number(23_000_000)
    ('3.2B', '999.89M', '23M')
    """
    for scale, unit, decimals in ((1e12, "T", 1), (1e9, "B", 1), (1e6, "M", 2)):
        if count >= scale:
            number = count / scale
            return f"{number:.0f}{unit}" if number.is_integer() else f"{number:.{decimals}f}{unit}"
    return f"{count / 1e3:.0f}K" if count >= 1000 else str(count)


def _go_value(value: Any) -> str:
    """A parameter value as /api/show prints it (Go `%#v` of the decoded JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # JSON numbers are float64 to Go: 4096.0 prints as 4096
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(float(value))
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


class _Stop(Exception):
    """Planning ends here: the job fails with *failure*."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass
class _Base:
    """What a created model starts from: a model, or uploaded files."""

    spec: ModelSpec | None
    layers: list[tuple[Layer, str]]  # (layer, its status line)
    parent: str
    file_type: str


class _Job:
    """Plans one create request as steps (see progress.py), failing where the server does."""

    def __init__(self, state: ServerState, request: dict[str, Any], name: ModelName) -> None:
        self.state = state
        self.request = request
        self.name = name
        self.steps: list[Step] = []

    def line(self, status: str, pause: float = 0.0, **fields: Any) -> None:
        self.steps.append((pause, {"status": status, **fields}))

    def plan(self) -> list[Step]:
        """All the job's steps, ending in `success` or in a failure."""
        try:
            source = self.request.get("from", "")
            if source:
                base = self._from_model(source)
            elif "files" in self.request:
                base = self._from_files(self.request["files"])
            else:
                raise _Stop(Failure("neither 'from' or 'files' was specified", 400))
            if "adapters" in self.request:
                base.layers += self._from_files(self.request["adapters"], adapter=True).layers
            self._finish(base)
        except _Stop as stop:
            self.steps.append((0.0, stop.failure))
        return self.steps

    # -- the base layers ---------------------------------------------------------------------

    def _from_model(self, source: str) -> _Base:
        parsed = parse_model_name(source)
        if parsed is None:
            raise _Stop(Failure("invalid model name", 400))
        spec = self.state.lookup(parsed) or self._pull(parsed)
        layers = [(layer, f"using existing layer {layer.digest}") for layer in layers_for(spec)]
        return _Base(spec, layers, parsed.display, spec.quantization_level.upper())

    def _pull(self, name: ModelName) -> ModelSpec:
        """`parseFromModel` pulls a model that is not installed (its lines, its `success`)."""
        remote = self.state.remote_lookup(name)
        if remote is None:
            self.line("pulling manifest")
            raise _Stop(Failure("pull model manifest: file does not exist"))
        seconds = self.state.pull_seconds
        self.steps += pull_progress(remote, present=False, seconds=seconds)
        spec = remote.renamed(name.display)
        self.steps.append((PULL_SHARES[-1] * seconds, lambda: self.state.install(spec)))
        self.line("success")
        return spec

    def _from_files(self, files: dict[str, str], *, adapter: bool = False) -> _Base:
        """`convertModelFromFiles`: GGUF blobs as they are (or safetensors, "converted")."""
        bad_request = 400 if adapter else 500  # adapter errors are all 400s
        kind = self._file_kind(files)
        if kind is None:
            raise _Stop(Failure("unknown type", 400))
        if adapter and kind == "gguf" and len(files) > 1:
            raise _Stop(Failure("only one adapter is currently supported", 400))
        media = "adapter" if adapter else "model"
        layers: list[tuple[Layer, str]] = []
        if kind == "safetensors":
            self.line("converting adapter" if adapter else "converting model")
            sizes = [self._blob_size(files[path], bad_request) for path in sorted(files)]
            digests = ",".join(files[path] for path in sorted(files))
            layer = Layer(f"sha256:{sha256_hex('converted:' + digests)}", sum(sizes), media)
            layers.append((layer, self._new_layer_status(layer)))
        for path in sorted(files) if kind == "gguf" else ():
            self.line("parsing GGUF")
            digest = files[path]
            size = self._blob_size(digest, bad_request)
            blob = self.state.blob(blob_key(digest))
            if blob is not None and not blob.gguf:
                raise _Stop(Failure("supplied file was not in GGUF format", 400))
            layer = Layer(blob_key(digest), size, media)
            layers.append((layer, f"using existing layer {layer.digest}"))
        parent = sorted(files)[0] if files else ""
        return _Base(None, layers, parent, UPLOADED_FILE_TYPE)

    def _file_kind(self, files: dict[str, str]) -> str | None:
        """`detectModelTypeFromFiles`: by file name, else by a blob's GGUF magic number."""
        for path in sorted(files):
            if path.endswith(".safetensors"):
                return "safetensors"
            if path.endswith(".gguf"):
                return "gguf"
            try:
                blob = self.state.blob(blob_key(files[path]))
            except ApiError:
                return None
            if blob is not None and blob.gguf:
                return "gguf"
        return None

    def _blob_size(self, digest: str, status: int) -> int:
        """The size of uploaded blob *digest*; the server's open error when it is missing."""
        try:
            key = blob_key(digest)
        except ApiError as exc:
            raise _Stop(Failure(exc.message, status)) from exc
        blob = self.state.blob(key)
        if blob is not None:
            return blob.size
        for spec in self.state.models:  # a layer of an installed model is a blob too
            for layer in layers_for(spec):
                if layer.digest == key:
                    return layer.size
        message = f"open {blob_path(digest)}: no such file or directory"
        raise _Stop(Failure(message, status))

    def _new_layer_status(self, layer: Layer) -> str:
        """`manifest.NewLayer`'s status for a blob it writes now (and the blob is held)."""
        known = self.state.has_blob(layer.digest)
        self.state.add_blob(layer.digest, Blob(layer.size, gguf=layer.media == "model"))
        verb = "using existing layer" if known else "creating new layer"
        return f"{verb} {layer.digest}"

    # -- createModel ---------------------------------------------------------------------------

    def _finish(self, base: _Base) -> None:
        layers, file_type = self._quantize(base.layers, base.file_type)
        # A quantized layer is a new blob, not one taken from the parent.
        parent = base.parent if file_type == base.file_type else ""
        request = self.request
        source = base.spec
        for media in ("template", "system"):
            text = request.get(media, "")
            if text:
                layers = [entry for entry in layers if entry[0].media != media]
                layers.append(self._text(text, media))
        licenses = _licenses(request.get("license"))
        layers += [self._text(text, "license") for text in licenses]
        parameters, content = _parameters(request.get("parameters") or {}, source)
        if content is not None:
            layers = [entry for entry in layers if entry[0].media != "params"]
            layers.append(self._text(content, "params"))
        messages = tuple((m["role"], m["content"]) for m in request.get("messages") or [])
        if messages:
            data = [{"role": role, "content": text} for role, text in messages]
            layers = [entry for entry in layers if entry[0].media != "messages"]
            layers.append(self._text(go_json(data) + b"\n", "messages"))
        for _layer, status in layers:
            self.line(status)
        self.line("writing manifest")
        manifest = tuple(layer for layer, _ in layers)
        fields: dict[str, Any] = {
            "name": self.name.display,
            "template": request.get("template") or (source.template if source else ""),
            "system": request.get("system") or (source.system if source else ""),
            "license": "\n".join(
                ([source.license] if source and source.license else []) + licenses
            ),
            "parameters": parameters,
            "messages": messages or (source.messages if source else ()),
            "layers": manifest,
            "parent_model": parent,
            "quantization_level": file_type,
            "size": sum(layer.size for layer in manifest),
            "digest": sha256_hex("manifest:" + ",".join(layer.digest for layer in manifest)),
            "modified_at": datetime.now(timezone.utc),
        }
        if source is not None:
            spec = replace(source, **fields)
        else:
            weights = sum(layer.size for layer in manifest if layer.media == "model")
            count = int(weights * 8 / QUANT_BITS.get(file_type, 16.0))
            spec = ModelSpec(**fields, parameter_size=human_number(count))
        self.steps.append((0.0, lambda: self.state.install(spec)))
        self.line("success")

    def _quantize(
        self, layers: list[tuple[Layer, str]], file_type: str
    ) -> tuple[list[tuple[Layer, str]], str]:
        """The layers with the model's weights quantized as asked (progress lines planned)."""
        asked = (self.request.get("quantize") or self.request.get("quantization") or "").upper()
        if not asked:
            return layers, file_type
        want = QUANT_ALIASES.get(asked, asked)
        out = []
        quantized_any = False
        for layer, status in layers:
            if layer.media != "model":
                out.append((layer, status))
                continue
            if want not in QUANT_BITS:
                raise _Stop(Failure(UNSUPPORTED_QUANT.format(asked)))
            if file_type not in ("F16", "BF16", "F32"):
                raise _Stop(Failure(NOT_QUANTIZABLE))
            if want == file_type:
                out.append((layer, status))
                continue
            line = {
                "status": f"quantizing {file_type} model to {asked}",
                "digest": QUANTIZE_DIGEST,
                "total": layer.size,
            }
            self.steps += progress_steps(line, layer.size, PULL_SHARES[0] * self.state.pull_seconds)
            self.line("verifying conversion")
            size = int(layer.size * QUANT_BITS[want] / QUANT_BITS[file_type])
            quantized = Layer(f"sha256:{sha256_hex(f'{want}:{layer.digest}')}", size, "model")
            out.append((quantized, self._new_layer_status(quantized)))
            quantized_any = True
        return out, want if quantized_any else file_type

    def _text(self, text: str | bytes, media: str) -> tuple[Layer, str]:
        """A new layer holding *text*, with its status line."""
        layer = text_layer(text, media)
        return layer, self._new_layer_status(layer)


def _licenses(value: Any) -> list[str]:
    """`license` as createModel takes it: a string (if not empty) or a list of strings."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        kind = json_kind(value)
        raise _Stop(Failure(f"json: cannot unmarshal {kind} into Go value of type []string"))
    for item in value:
        if not isinstance(item, str):
            kind = json_kind(item)
            raise _Stop(Failure(f"json: cannot unmarshal {kind} into Go value of type string"))
    return list(value)


def _parameters(
    new: dict[str, Any], source: ModelSpec | None
) -> tuple[tuple[tuple[str, str], ...], bytes | None]:
    """`setParameters`: the request's parameters over the source model's; the pairs /api/show
    lists and the params blob (None when there are no parameters at all)."""
    inherited: dict[str, list[str]] = {}
    for key, value in source.parameters if source else ():
        inherited.setdefault(key, []).append(value)
    merged: dict[str, Any] = dict(new)
    for key, values in inherited.items():
        merged.setdefault(key, values if len(values) > 1 or key == "stop" else values[0])
    if not merged:
        return (), None
    pairs: list[tuple[str, str]] = []
    for key, value in merged.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((key, _go_value(item)))
    return tuple(pairs), go_json(dict(sorted(merged.items()))) + b"\n"
