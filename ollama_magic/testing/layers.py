"""The blobs of a model's manifest, and the progress of moving them: pull and push."""

from __future__ import annotations

import hashlib
from typing import Any

from ollama_magic.testing.catalog import Layer, ModelSpec, sha256_hex

PULL_TICK = 0.1  # seconds between progress lines of a layer while a paced pull downloads
# How a paced pull's (or push's) time divides: moving the blobs, verifying the digest (or
# getting ready to push the manifest), writing (or pushing) the manifest.
PULL_SHARES = (0.8, 0.15, 0.05)
CONFIG_SIZE = 485  # a typical `application/vnd.docker.container.image.v1+json` config blob


def layers_for(spec: ModelSpec) -> list[Layer]:
    """The manifest layers of *spec*: its own (a created model's), or derived ones: weights,
    template, system (if any), license and params blobs."""
    if spec.layers:
        return list(spec.layers)
    small = {
        "template": len(spec.template.encode()) or 1,
        "license": len(spec.license.encode()) or 1,
        "params": 96,
    }
    layers = [
        Layer(f"sha256:{sha256_hex('weights:' + spec.digest)}", spec.size - sum(small.values()))
    ]
    layers += [
        Layer(f"sha256:{sha256_hex(kind + ':' + spec.digest)}", size, kind)
        for kind, size in small.items()
    ]
    if spec.system:
        layers.insert(2, text_layer(spec.system, "system"))
    return layers


def config_layer(spec: ModelSpec) -> Layer:
    """The config blob a manifest names beside its layers (pushed last)."""
    return Layer(f"sha256:{sha256_hex('config:' + spec.digest)}", CONFIG_SIZE, "config")


def text_layer(text: str | bytes, media: str) -> Layer:
    """A layer holding *text*, named by its content's SHA-256 as the server names blobs."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return Layer(f"sha256:{hashlib.sha256(data).hexdigest()}", len(data), media)


def progress_steps(
    line: dict[str, Any], total: int, seconds: float
) -> list[tuple[float, dict[str, Any]]]:
    """Progress lines filling *total* over *seconds*: about one each `PULL_TICK` seconds,
    at least four; each is *line* with its `completed` count."""
    steps = max(4, round(seconds / PULL_TICK))
    return [
        (seconds / steps, {**line, "completed": total * step // steps})
        for step in range(1, steps + 1)
    ]


def pull_progress(
    remote: ModelSpec, present: bool, seconds: float = 0.0
) -> list[tuple[float, dict[str, Any]]]:
    """The progress lines of pulling *remote*, up to `writing manifest`, each with the pause
    (in seconds) to make before it; `success` follows after `PULL_SHARES[2] * seconds`.

    Instant (*seconds* 0), each layer to download gets four updates. Paced, the download takes
    most of the time, shared among the layers by size, and a layer updates about every
    `PULL_TICK` seconds, so the weights fill a progress bar while the small blobs flash by.
    Layers already *present* are a single line each and take no time.

    >>> lines = pull_progress(ModelSpec("demo", size=10_000), present=False, seconds=2.0)
    >>> round(sum(pause for pause, _ in lines), 6), len(lines)
    (1.9, 34)
    """
    download, verify, _ = (share * seconds for share in PULL_SHARES)
    layers = layers_for(remote)
    size = sum(layer.size for layer in layers) or 1
    plan: list[tuple[float, dict[str, Any]]] = [(0.0, {"status": "pulling manifest"})]
    for layer in layers:
        status = f"pulling {layer.digest[7:19]}"
        line: dict[str, Any] = {"status": status, "digest": layer.digest, "total": layer.size}
        if present:
            plan.append((0.0, {**line, "completed": layer.size}))
            continue
        plan.append((0.0, line))
        plan += progress_steps(line, layer.size, download * layer.size / size)
    plan += [(0.0, {"status": "verifying sha256 digest"}), (verify, {"status": "writing manifest"})]
    return plan


def push_progress(spec: ModelSpec, seconds: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
    """The progress lines of pushing *spec*, up to `pushing manifest`, each with its pause.

    `retrieving manifest`, then for each layer and the config blob a `starting upload` line
    with its digest and size (as docs/api.md shows it), and `pushing <digest>` lines counting
    the bytes sent (`blobUpload.Wait` in server/upload.go); paced like a pull.

    >>> lines = push_progress(ModelSpec("me/demo", size=10_000))
    >>> [line["status"] for _, line in lines[:3]]
    ['retrieving manifest', 'starting upload', 'pushing c40793eb8413']
    >>> lines[-1]
    (0.0, {'status': 'pushing manifest'})
    """
    upload, prepare, _ = (share * seconds for share in PULL_SHARES)
    layers = [*layers_for(spec), config_layer(spec)]
    size = sum(layer.size for layer in layers) or 1
    plan: list[tuple[float, dict[str, Any]]] = [(0.0, {"status": "retrieving manifest"})]
    for layer in layers:
        sizes = {"digest": layer.digest, "total": layer.size}
        plan.append((0.0, {"status": "starting upload", **sizes}))
        line = {"status": f"pushing {layer.digest[7:19]}", **sizes}
        plan += progress_steps(line, layer.size, upload * layer.size / size)
    plan.append((prepare, {"status": "pushing manifest"}))
    return plan
