"""`Headers`: the header fields of a recorded request, looked up case-insensitively."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping


class Headers(Mapping[str, str]):
    """Request header fields whose names match whatever their case, as HTTP defines them.

    Lookups (`[]`, `get`, `in`) ignore case; iterating gives the names as the client spelled
    them. A field sent more than once keeps its last value.

    >>> headers = Headers({"authorization": "Bearer x", "X-Team": "physics"})
    >>> headers["Authorization"], headers.get("AUTHORIZATION"), "x-team" in headers
    ('Bearer x', 'Bearer x', True)
    >>> list(headers)
    ['authorization', 'X-Team']

    Args:
        fields: a mapping, or (name, value) pairs in the order received.
    """

    def __init__(self, fields: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = fields.items() if isinstance(fields, Mapping) else fields
        # Keyed by the lower-cased name; the value keeps the spelling for iteration.
        self._fields: dict[str, tuple[str, str]] = {}
        for name, value in pairs:
            self._fields[name.lower()] = (name, value)

    def __getitem__(self, name: str) -> str:
        if not isinstance(name, str):
            raise KeyError(name)
        try:
            return self._fields[name.lower()][1]
        except KeyError:
            raise KeyError(name) from None  # the name as asked for, not lower-cased

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._fields.values())

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        mine = {key: value for key, (_, value) in self._fields.items()}
        theirs = {str(name).lower(): value for name, value in other.items()}
        # The length check keeps {"a": 1, "A": 1} from equalling a one-field Headers.
        return len(other) == len(self) and mine == theirs

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"
