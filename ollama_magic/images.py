"""Images for vision models: from files, bytes, PIL images or numpy arrays, to base64.

PIL and numpy are used when the user has them (an array is encoded to PNG with PIL when it is
installed, else with the small encoder here); neither is required. The client encodes the
images of a request with :func:`encode_image`, so this module imports nothing above
:mod:`ollama_magic.errors`.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
import zlib
from collections.abc import Mapping
from html import escape  # quotes too: the text goes into attributes
from pathlib import Path
from typing import Any

from ollama_magic.errors import OllamaError
from ollama_magic.types import ToolCall

__all__ = [
    "ImageInput",
    "encode_image",
    "image_base64",
    "png_bytes",
    "thumbnails_html",
    "wire_message",
]

#: Anything accepted as an image: raw bytes, a file path, or base64 text.
ImageInput = bytes | bytearray | memoryview | str | os.PathLike[str]


def encode_image(image: ImageInput) -> str:
    """Turn an image into the base64 text Ollama wants (standard alphabet, no ``data:`` prefix).

    Accepts bytes, a path to a file (``str`` or ``Path``), base64 text, or a ``data:`` URI
    (whose prefix the server would reject with ``illegal base64 data at input byte 4``).

    >>> encode_image(b"GIF89a")
    'R0lGODlh'
    >>> encode_image("data:image/png;base64,R0lGODlh")
    'R0lGODlh'
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(image)).decode("ascii")
    if isinstance(image, os.PathLike):
        return _read_image_file(Path(image))
    if not isinstance(image, str):
        raise OllamaError(
            f"Cannot send a {type(image).__name__} as an image.",
            hint="Pass bytes, a file path, or base64 text.",
        )
    text = image.strip()
    uri = text.startswith("data:") and ";base64," in text[:100]
    if uri:
        text = text.split(";base64,", 1)[1]
    elif len(text) < 4096 and _is_file(text):
        return _read_image_file(Path(text).expanduser())
    try:
        # Decoded strictly and encoded again: what goes on (into a request, or into a
        # thumbnail's src) is base64 alone, never the quotes or markup a string can carry.
        return base64.b64encode(base64.b64decode(text, validate=True)).decode("ascii")
    except (binascii.Error, ValueError):
        if uri:
            raise OllamaError(
                "The image's data: URI does not hold valid base64.",
                hint="Pass the image's bytes or its file instead.",
            ) from None
        if re.search(r"[/\\]|\.[A-Za-z]{2,5}$", text[-300:]):
            raise OllamaError(
                f"Image file not found: {text}", hint="Check the path (relative to the notebook)."
            ) from None
        raise OllamaError(
            "Image is neither a file nor base64 text.",
            hint="Pass bytes, an existing file path, or base64 text.",
        ) from None


def _is_file(text: str) -> bool:
    try:
        return Path(text).expanduser().is_file()
    except (OSError, ValueError):  # a name too long, or a NUL byte
        return False


def _read_image_file(path: Path) -> str:
    try:
        return base64.b64encode(path.read_bytes()).decode("ascii")
    except FileNotFoundError as exc:
        raise OllamaError(
            f"Image file not found: {path}", hint="Check the path (relative to the notebook)."
        ) from exc


def image_base64(source: Any, namespace: Mapping[str, Any] | None = None) -> str:
    """Base64 text for one image.

    ``source`` may name a variable in ``namespace`` (bytes, a PIL image, a numpy array, a path),
    or be one of those itself, a file path, or base64 text.
    """
    if isinstance(source, str) and namespace is not None and source in namespace:
        source = namespace[source]
    if hasattr(source, "save") and hasattr(source, "mode"):  # a PIL image
        import io

        buffer = io.BytesIO()
        image = source if source.mode in ("RGB", "RGBA", "L") else source.convert("RGB")
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")
    if hasattr(source, "__array_interface__") and hasattr(source, "shape"):  # numpy
        return base64.b64encode(png_bytes(source)).decode("ascii")
    if isinstance(source, (bytes, bytearray, memoryview, str, os.PathLike)):
        return encode_image(source)
    raise OllamaError(
        f"Cannot send a {type(source).__name__} as an image.",
        hint="Use a file path, bytes, a PIL image, a numpy array, or base64 text.",
    )


def png_bytes(array: Any) -> bytes:
    """A numpy array (HxW gray, HxWx3 RGB, HxWx4 RGBA) as PNG bytes.

    Floats are taken as 0..1 and other numbers are clipped to 0..255.
    """
    import numpy as np

    data = np.asarray(array)
    if data.dtype.kind == "f":
        data = np.clip(data * 255.0 + 0.5, 0, 255)
    data = np.clip(data, 0, 255).astype(np.uint8)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[2] not in (3, 4)):
        raise OllamaError(
            f"Cannot send an array of shape {data.shape} as an image.",
            hint="Use height x width (gray), or height x width x 3 (RGB) or x 4 (RGBA).",
        )
    try:
        from PIL import Image
    except ImportError:  # optional: the small encoder below does without it
        return _png_without_pil(data)
    import io

    buffer = io.BytesIO()
    Image.fromarray(data).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_without_pil(data: Any) -> bytes:
    """PNG bytes of a uint8 array of shape HxW, HxWx3 or HxWx4, with zlib alone."""
    height, width = data.shape[:2]
    colour = 0 if data.ndim == 2 else 2 if data.shape[2] == 3 else 6  # gray, RGB, RGBA
    rows = b"".join(b"\x00" + data[y].tobytes() for y in range(height))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 6))
        + chunk(b"IEND", b"")
    )


_SIGNATURES = {
    b"\x89PNG": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF8": "image/gif",
    b"RIFF": "image/webp",
}


_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def thumbnails_html(images: list[str], names: list[str] | None = None) -> str:
    """Small previews of the images sent, for above the answer."""
    cells = []
    for i, data in enumerate(images):
        mime = None
        # Only plain base64 goes into a src. A conversation filled by code may hold anything (a
        # data: URI, markup): named below instead, and never decoded (it need not be base64).
        if _BASE64.fullmatch(data):
            head = base64.b64decode(data[: min(24, len(data) // 4 * 4)])
            mime = next((m for sig, m in _SIGNATURES.items() if head.startswith(sig)), None)
        label = escape(names[i]) if names and i < len(names) else f"image {i + 1}"
        if mime is None:  # not a format browsers show: name it instead
            cells.append(f'<span style="margin-right: 0.5em">[{label}]</span>')
            continue
        cells.append(
            f'<img src="data:{mime};base64,{escape(data)}" alt="{label}" title="{label}" '
            'style="max-height: 96px; max-width: 160px; margin-right: 0.5em; '
            'border-radius: 4px; vertical-align: top">'
        )
    return f'<div class="ollama-magic-images">{"".join(cells)}</div>'


def wire_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A chat message as the server wants it: images base64, tool calls as JSON."""
    out = {key: value for key, value in message.items() if value is not None}
    if out.get("images"):
        out["images"] = [encode_image(i) for i in out["images"]]
    if out.get("tool_calls"):
        out["tool_calls"] = [
            c.to_json() if isinstance(c, ToolCall) else c for c in out["tool_calls"]
        ]
    out.setdefault("content", "")
    return out
