"""`HEAD|POST /api/blobs/:digest`: the files a created model is made from.

Texts and statuses are those of `HeadBlobHandler` and `CreateBlobHandler` (server/routes.go)
and `manifest.BlobsPath` (manifest/paths.go): a digest must match `^sha256[:-][0-9a-fA-F]{64}$`
(else 400 `invalid digest format`); the blob is stored as `sha256-<hex as written>`, so
`sha256:X` and `sha256-X` name the same blob.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

from ollama_magic.testing.connection import RequestHandler, reads_own_body
from ollama_magic.testing.gojson import go_quote
from ollama_magic.testing.records import RecordedRequest
from ollama_magic.testing.state import Blob
from ollama_magic.testing.wire import ApiError

PREFIX = "/api/blobs/"
_DIGEST = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$")
GGUF_MAGIC = (b"GGUF", b"FUGG")  # little- and big-endian files


def blob_key(digest: str) -> str:
    """The digest a blob is held under (`sha256:<hex>`), as the file name the server uses.

    Raises:
        ApiError: 400 `invalid digest format`.
    """
    if not _DIGEST.match(digest):
        raise ApiError(400, "invalid digest format")
    return "sha256:" + digest[7:]


def blob_path(digest: str) -> str:
    """Where the real server keeps blob *digest* (for error texts that name the file)."""
    return f"/root/.ollama/models/blobs/{digest.replace(':', '-')}"


def _digest(record: RecordedRequest) -> str:
    """The `:digest` path parameter, percent-decoded as gin gives it."""
    return unquote(record.path[len(PREFIX) :])


def head_blob(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`HEAD /api/blobs/:digest`: 200 if the server holds the blob, else 404."""
    digest = _digest(record)
    if not handler.state.has_blob(blob_key(digest)):
        # The body (never sent for HEAD) would be {"error": "blob \"sha256:…\" not found"}.
        raise ApiError(404, f"blob {go_quote(digest)} not found")
    handler.respond_bytes(200, None, b"")


@reads_own_body
def post_blob(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/blobs/:digest`: store the body (hashed as it arrives, never held whole).

    201 when stored; 200 without reading the body when the blob is already there; 400
    `digest mismatch, expected "…", got "…"` when the body hashes otherwise (the blob is
    kept under the digest it has, as `manifest.NewLayer` has already written it).
    """
    digest = _digest(record)
    key = blob_key(digest)
    state = handler.state
    if state.has_blob(key):
        handler.respond_bytes(200, None, b"")
        return
    sha = hashlib.sha256()
    head = b""
    for piece in iter(handler.body.read, b""):
        sha.update(piece)
        if len(head) < 4:
            head += piece[: 4 - len(head)]
    actual = f"sha256:{sha.hexdigest()}"
    state.add_blob(actual, Blob(handler.body.received, gguf=head in GGUF_MAGIC))
    if actual != digest:
        raise ApiError(400, f"digest mismatch, expected {go_quote(digest)}, got {go_quote(actual)}")
    handler.respond_bytes(201, None, b"")
