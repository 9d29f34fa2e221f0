"""Managing a server's models: pull, create, push, copy, delete, and the blobs a created model
is made from. :class:`ModelManagement` is part of :class:`~ollama_magic.client.Client`.

Progress arrives as NDJSON status lines (``pulling …``, ``creating new layer …``, ``starting
upload``) and ends with ``{"status": "success"}``; an ``{"error": …}`` line in between is the
failure, mapped here to one clear line with what to do next.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, overload

from ollama_magic import http_errors
from ollama_magic.errors import ModelNotFound, OllamaError, ResponseError
from ollama_magic.stream import ndjson_objects
from ollama_magic.types import Progress

if TYPE_CHECKING:
    import requests

    from ollama_magic.transport import Cancellation

__all__ = ["QUANTIZATIONS", "ModelManagement", "Reading", "api_fields", "file_digest"]

#: The quantization types ``create`` accepts (q4_K_M and q8_0 are the recommended ones).
QUANTIZATIONS = (
    "q4_K_M",
    "q8_0",
    "q2_K",
    "q3_K_L",
    "q3_K_M",
    "q3_K_S",
    "q4_0",
    "q4_1",
    "q4_K_S",
    "q5_0",
    "q5_1",
    "q5_K_M",
    "q5_K_S",
    "q6_K",
)

#: Bytes read at a time while a file is hashed or uploaded (never the whole file at once).
_CHUNK = 1 << 20


#: Told how many bytes of a file were read so far (hashing or uploading it).
Reading = Callable[[int], None]


def file_digest(path: str | os.PathLike[str], progress: Reading | None = None) -> str:
    """``sha256:<hex>`` of a file, read a megabyte at a time (a model is gigabytes)."""
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(done)
    return f"sha256:{digest.hexdigest()}"


class _Counted(io.RawIOBase):
    """A file whose reads are counted, for an upload's progress (requests sends it in blocks;
    its length makes the Content-Length)."""

    def __init__(self, handle: BinaryIO, size: int, progress: Reading) -> None:
        self._handle, self._size, self._progress, self._done = handle, size, progress, 0

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        block = self._handle.read(-1 if size is None else size)
        self._done += len(block)
        self._progress(self._done)
        return block

    def tell(self) -> int:
        return self._handle.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        self._done = 0
        return self._handle.seek(offset, whence)


class ModelManagement:
    """The model-management calls of a :class:`~ollama_magic.client.Client`."""

    if TYPE_CHECKING:  # provided by Client
        host: str

        def _send(
            self,
            method: str,
            path: str,
            body: dict[str, Any] | None = None,
            *,
            stream: bool = False,
            model: str = "",
            cancel: Cancellation | None = None,
            data: Any = None,
        ) -> requests.Response: ...

        def _json(
            self,
            method: str,
            path: str,
            body: dict[str, Any] | None = None,
            *,
            model: str = "",
            cancel: Cancellation | None = None,
        ) -> dict[str, Any]: ...

        @property
        def _origin(self) -> http_errors.Origin: ...

        @property
        def _max_line_bytes(self) -> int: ...

    # -- pull and push ----------------------------------------------------------------------

    @overload
    def pull(
        self, model: str, *, insecure: bool = ..., stream: Literal[True] = ...
    ) -> Iterator[Progress]: ...
    @overload
    def pull(self, model: str, *, insecure: bool = ..., stream: Literal[False]) -> Progress: ...
    def pull(
        self, model: str, *, insecure: bool = False, stream: bool = True
    ) -> Iterator[Progress] | Progress:
        """Download a model (``POST /api/pull``); streaming yields progress lines as they come."""
        body = api_fields(model=model, insecure=insecure or None, stream=stream)
        return self._progress("/api/pull", body, model, stream)

    @overload
    def push(
        self, model: str, *, insecure: bool = ..., stream: Literal[True] = ...
    ) -> Iterator[Progress]: ...
    @overload
    def push(self, model: str, *, insecure: bool = ..., stream: Literal[False]) -> Progress: ...
    def push(
        self, model: str, *, insecure: bool = False, stream: bool = True
    ) -> Iterator[Progress] | Progress:
        """Upload a model to its registry (``POST /api/push``), e.g. ``"me/tutor:latest"``:
        the name's namespace must be yours (a key registered on ollama.com)."""
        body = api_fields(model=model, insecure=insecure or None, stream=stream)
        return self._progress("/api/push", body, model, stream)

    # -- create -----------------------------------------------------------------------------

    @overload
    def create(
        self, model: str, *, stream: Literal[True] = ..., **fields: Any
    ) -> Iterator[Progress]: ...
    @overload
    def create(self, model: str, *, stream: Literal[False], **fields: Any) -> Progress: ...
    def create(
        self,
        model: str,
        *,
        from_: str | None = None,
        system: str | None = None,
        template: str | None = None,
        license: str | Sequence[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        files: Mapping[str, str] | None = None,
        adapters: Mapping[str, str] | None = None,
        quantize: str | None = None,
        stream: bool = True,
        **extra: Any,
    ) -> Iterator[Progress] | Progress:
        """Create a model (``POST /api/create``): from another (``from_``), or from uploaded
        files (``files``: names to blob digests, see :meth:`push_blob`), with a system
        prompt, template, parameters, messages or adapters of its own, or quantized."""
        body = api_fields(
            model=model,
            **{"from": from_},
            system=system,
            template=template,
            license=list(license) if isinstance(license, (list, tuple)) else license,
            parameters=dict(parameters) if parameters else None,
            messages=[dict(m) for m in messages] if messages else None,
            files=dict(files) if files else None,
            adapters=dict(adapters) if adapters else None,
            quantize=quantize,
            stream=stream,
            **extra,
        )
        return self._progress("/api/create", body, model, stream)

    # -- copy and delete --------------------------------------------------------------------

    def delete(self, model: str) -> None:
        """Delete a local model (``DELETE /api/delete``)."""
        self._send("DELETE", "/api/delete", {"model": model}, model=model).close()

    def copy(self, source: str, destination: str) -> None:
        """Copy a local model under a new name (``POST /api/copy``)."""
        body = {"source": source, "destination": destination}
        self._send("POST", "/api/copy", body, model=source).close()

    # -- blobs ------------------------------------------------------------------------------

    def blob_exists(self, digest: str) -> bool:
        """Whether the server holds the blob ``sha256:<hex>`` (``HEAD /api/blobs/:digest``)."""
        try:
            self._send("HEAD", f"/api/blobs/{digest}").close()
        except ModelNotFound:
            return False
        except ResponseError as error:
            if error.status_code == 404:
                return False
            raise
        return True

    def push_blob(
        self,
        path: str | os.PathLike[str],
        digest: str | None = None,
        *,
        check: bool = True,
        progress: Reading | None = None,
    ) -> str:
        """Upload a file as a blob unless the server has it already (``check=False``: the
        caller asked); its digest, for ``create(files={name: digest})``.

        The file is hashed and then sent a piece at a time, never read whole into memory;
        ``progress`` hears how many bytes were sent so far.
        """
        digest = digest or file_digest(path)
        if not check or not self.blob_exists(digest):
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                body = _Counted(handle, size, progress) if progress else handle
                self._send("POST", f"/api/blobs/{digest}", data=body).close()
        return digest

    # -- progress -----------------------------------------------------------------------------

    def _progress(
        self, path: str, body: dict[str, Any], model: str, stream: bool
    ) -> Iterator[Progress] | Progress:
        try:
            if not stream:
                return Progress.from_json(self._json("POST", path, body, model=model))
            response = self._send("POST", path, body, stream=True, model=model)
        except ResponseError as error:
            if path == "/api/pull" or not error.status_code or error.status_code >= 502:
                raise
            # A 400/404/500 with the server's reason (a bad quantization, a source that does
            # not exist): the request's fault, said as one line, not as a server failure.
            raise management_error(path, error.server_message, model) from None
        return self._progress_lines(response, path, model)

    def _progress_lines(
        self, response: requests.Response, path: str, model: str
    ) -> Iterator[Progress]:
        origin = self._origin
        with response:
            for obj in ndjson_objects(response, origin=origin, max_line_bytes=self._max_line_bytes):
                error = http_errors.in_band_message(obj)
                if error is not None:
                    if path == "/api/pull":
                        raise http_errors.pull_error(origin, error, model)
                    raise management_error(path, error, model)
                yield Progress.from_json(obj)


def management_error(path: str, message: str, model: str) -> OllamaError:
    """The exception for a create or push that failed (an ``{"error": …}`` line)."""
    verb = {"/api/create": "Creating", "/api/push": "Pushing"}.get(path, "Managing")
    hint = ""
    lowered = message.lower()
    if "only supported for" in lowered:
        hint = "Quantize a model in F16, BF16 or F32 (a GGUF file often is), not a quantized one."
    elif "quantiz" in lowered:
        hint = "q4_K_M and q8_0 are the usual types."
    elif "digest" in lowered or "blob" in lowered:
        hint = "Upload the file again: `%ollama create NAME --gguf PATH` does it."
    elif "not found" in lowered or "does not exist" in lowered or "no such" in lowered:
        hint = "Check the name with `%ollama models` (or pull the model first)."
    elif "namespace" in lowered or "unauthorized" in lowered or "not authorized" in lowered:
        hint = "Push as NAMESPACE/model with a key registered on ollama.com (`%ollama cp` renames)."
    return OllamaError(f"{verb} {model} failed: {message}", hint=hint)


def api_fields(**fields: Any) -> dict[str, Any]:
    """A request body without the fields left as None (the server's defaults apply)."""
    return {key: value for key, value in fields.items() if value is not None}
