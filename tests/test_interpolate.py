"""Prompt interpolation: fields from the namespace, everything else exactly as typed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ollama_magic.interpolate import interpolate

NS = {
    "name": "Ada",
    "n": 3.14159,
    "xs": [10, 20],
    "d": {"key": "value"},
    "obj": SimpleNamespace(attr="attribute"),
    "k": 1,
}


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Hello {name}", "Hello Ada"),
        ("{obj.attr}", "attribute"),
        ("{xs[0]} and {xs[1]}", "10 and 20"),
        ("{d[key]}", "value"),
        ("{name!r}", "'Ada'"),
        ("{n:.2f}", "3.14"),
        ("{name:>5}|", "  Ada|"),
        ("{{name}}", "{name}"),
        ("{{ .Prompt }}", "{ .Prompt }"),
        ("a }} b", "a } b"),
        # Not fields: stay exactly as typed.
        ('{"a": 1}', '{"a": 1}'),
        ('{"a": {"b": {"c": 1}}}', '{"a": {"b": {"c": 1}}}'),
        ("[{'x': 1}, {'y': 2}]", "[{'x': 1}, {'y': 2}]"),
        ("{k: v for k, v in d.items()}", "{k: v for k, v in d.items()}"),
        ("counts = {k: 0}", "counts = {k: 0}"),
        ("{n: 5}", "{n: 5}"),
        ("def f():\n    return {}\n", "def f():\n    return {}\n"),
        (r"$\frac{1}{2} + \sqrt{x}$", r"$\frac{1}{2} + \sqrt{x}$"),
        ("{undefined} stays", "{undefined} stays"),
        ("{xs[9]} out of range", "{xs[9]} out of range"),
        ("{name.nope}", "{name.nope}"),
        ("{ name }", "{ name }"),
        ("unbalanced { and } and {", "unbalanced { and } and {"),
        ("set {1, 2}", "set {1, 2}"),
        ("", ""),
    ],
)
def test_interpolation(prompt, expected):
    assert interpolate(prompt, NS) == expected


def test_a_dataframe_interpolates_as_its_text_table():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"city": ["Oslo", "Lima"], "temp": [3, 19]})
    out = interpolate("Summarise:\n{df}\nand {df.shape[0]} rows", {"df": df})
    assert "Oslo" in out and "Lima" in out and "and 2 rows" in out
