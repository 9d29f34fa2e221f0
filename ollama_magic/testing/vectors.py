"""Deterministic embeddings: a bag of pseudo-random word vectors, in float32 precision.

A batch of embeddings is millions of floats, so the arithmetic runs column-wise through
C-level helpers (`map` over `operator` functions, `array`) rather than a Python loop per
element. Every value is still the one the plain element-wise formulas give, bit for bit.
"""

from __future__ import annotations

import math
import operator
import random
import re
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import compress, islice, repeat

from ollama_magic.testing.replies import stable_hash

__all__ = ["embedding", "normalize"]

_WORD = re.compile(r"\w+")
# Digit counts tried, shortest first, for the decimal form of a float32 (9 always round-trips).
_DIGITS = (6, 7, 8, 9)
_CHAIN = 64  # words summed lazily before the running total is made a list


def _gaussians_reference(seed: int, count: int) -> list[float]:
    """*count* normal deviates from `random.Random(seed).gauss`, one call at a time."""
    rng = random.Random(seed)
    return [rng.gauss(0.0, 1.0) for _ in range(count)]


def _gaussians_columnwise(seed: int, count: int) -> list[float]:
    """The same deviates as `_gaussians_reference`, computed a column at a time.

    `Random.gauss` turns two uniforms (u, v) into the pair cos(2πu)·r and sin(2πu)·r with
    r = sqrt(-2·log(1 - v)), and returns `mu + z * sigma`; this applies the same float
    operations in the same order to all the pairs at once.
    """
    rng = random.Random(seed)
    pairs = (count + 1) // 2
    uniforms = list(islice(iter(rng.random, -1.0), 2 * pairs))  # random() is never negative
    angles = list(map(operator.mul, uniforms[0::2], repeat(math.tau)))
    logs = map(math.log, map(operator.sub, repeat(1.0), uniforms[1::2]))
    radii = list(map(math.sqrt, map(operator.mul, repeat(-2.0), logs)))
    values = [0.0] * (2 * pairs)
    values[0::2] = map(operator.mul, map(math.cos, angles), radii)
    values[1::2] = map(operator.mul, map(math.sin, angles), radii)
    # mu + z * sigma with mu=0, sigma=1: only turns -0.0 into 0.0, but that is what gauss does.
    return list(map(operator.add, repeat(0.0), islice(values, count)))


# The column-wise form relies on how `Random.gauss` is written; should a Python version write it
# differently, the one-call-at-a-time form keeps the vectors what `gauss` gives.
_gaussians = (
    _gaussians_columnwise
    if all(
        list(map(float.hex, _gaussians_columnwise(seed, 9)))
        == list(map(float.hex, _gaussians_reference(seed, 9)))
        for seed in (0, 1, 2**63)
    )
    else _gaussians_reference
)


@lru_cache(maxsize=8192)
def _word_vector(model: str, word: str, dims: int) -> array[float]:
    """The pseudo-random vector of one word (an array: a quarter of the memory of a tuple)."""
    return array("d", _gaussians(stable_hash("embed", model, word), dims))


def _float32s(values: Sequence[float]) -> list[float]:
    """Each value rounded to float32, as the shortest decimal (of 6 to 9 digits) that reads
    back as that float32, which is how Go prints it; a value none of them fits stays exact.
    """
    exact = array("f", values)  # a C cast to float per element: the float32 rounding
    result = exact.tolist()
    positions: Sequence[int] = range(len(result))  # where no decimal has fitted yet
    unsettled = result
    # Shortest first, each pass over what is left (6 digits fit few values, 8 nearly all):
    # one %-format of the whole batch, parsed back, then read back as float32 to compare.
    for digits in _DIGITS:
        if not unsettled:
            break
        template = f"%.{digits}g " * len(unsettled)
        short = list(map(float, (template % tuple(unsettled)).split()))
        fits = list(map(operator.eq, array("f", short), unsettled))
        deque(map(result.__setitem__, compress(positions, fits), compress(short, fits)), 0)
        misses = list(map(operator.not_, fits))
        positions = list(compress(positions, misses))
        unsettled = list(compress(unsettled, misses))
    return result


def embedding(model: str, text: str, dims: int) -> list[float]:
    """A deterministic, L2-normalised embedding.

    Texts that share words get similar vectors (a bag of pseudo-random word vectors), so
    similarity-search demos behave sensibly.
    """
    words = _WORD.findall(text.lower()) or [text]
    # Element-wise, from 0.0, word after word: the order in which the sums have always been
    # taken (`sum` over columns would differ: Python 3.12 compensates its float sums). The
    # maps are chained lazily, so no list is built per word; but every so often, as each link
    # of the chain is a nested C call and a long text must not run out of stack.
    total: Iterable[float] = repeat(0.0, dims)
    for count, word in enumerate(words, start=1):
        total = map(operator.add, total, _word_vector(model, word, dims))
        if count % _CHAIN == 0:
            total = list(total)
    return normalize(list(total))


def normalize(vector: Sequence[float]) -> list[float]:
    """L2-normalise *vector* (float32 precision, like the server)."""
    norm = math.sqrt(sum(map(operator.mul, vector, vector))) or 1.0
    return _float32s(list(map(operator.truediv, vector, repeat(norm))))
