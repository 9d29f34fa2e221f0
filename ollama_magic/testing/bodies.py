"""Reading a request body piece by piece (Content-Length or chunked), so an upload of any size
goes through a bounded buffer."""

from __future__ import annotations

from io import BufferedIOBase

PIECE = 1 << 20  # the most a single read returns


class BodyError(OSError):
    """The body ended before its declared end, or its chunked framing is broken; the
    connection cannot be reused."""


class BodyReader:
    """One request's body, given out once, in pieces, as they are asked for.

    Args:
        rfile: the connection's buffered input, positioned at the body.
        length: the `Content-Length` header, if any.
        encoding: the `Transfer-Encoding` header, if any.

    Raises:
        ValueError: for a `Content-Length` that is not a number.
    """

    def __init__(
        self, rfile: BufferedIOBase, length: str | None = None, encoding: str | None = None
    ) -> None:
        self._rfile = rfile
        self._chunked = "chunked" in (encoding or "").lower()
        self._left = 0 if self._chunked else max(0, int(length or 0))
        self._done = not self._chunked and self._left == 0
        self.received = 0
        """Body bytes read so far."""

    def read(self, size: int = PIECE) -> bytes:
        """Up to *size* more bytes of the body; b"" once it is all read.

        Raises:
            BodyError: the client stopped sending early, or sent broken chunk framing.
        """
        if self._done:
            return b""
        if self._chunked and self._left == 0 and not self._next_chunk():
            return b""
        data = self._rfile.read(min(size, self._left))
        if not data:
            raise BodyError("the request body ended early")
        self._left -= len(data)
        self.received += len(data)
        if self._left == 0:
            if self._chunked:
                self._rfile.readline()  # the CRLF that ends the chunk
            else:
                self._done = True
        return data

    def _next_chunk(self) -> bool:
        """Read the next chunk's size line; False (and done) at the last chunk."""
        line = self._rfile.readline()
        try:
            size = int(line.split(b";")[0].strip() or b"0", 16)
        except ValueError as exc:
            raise BodyError(f"bad chunk size line {line[:40]!r}") from exc
        if size == 0:
            while self._rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            self._done = True
            return False
        self._left = size
        return True

    def read_all(self) -> bytes:
        """The rest of the body; what arrived, if the client stopped sending early (the
        request is then handled with it, as the stand-in always did)."""
        parts: list[bytes] = []
        try:
            for piece in iter(self.read, b""):
                parts.append(piece)
        except BodyError:
            self._done = True
        return b"".join(parts)

    def drain(self) -> None:
        """Read and drop the rest of the body, so the connection can serve the next request.

        Raises:
            BodyError: the body is broken (close the connection instead).
        """
        for _ in iter(self.read, b""):
            pass

    @property
    def done(self) -> bool:
        """Whether the whole body has been read."""
        return self._done
