"""TOML writing round-trips through tomllib."""

from __future__ import annotations

import tomllib

from hypothesis import given
from hypothesis import strategies as st

from edgeagent.tomlfile import dumps, parse_value

keys = st.text(min_size=1, max_size=12).filter(lambda k: "\n" not in k and "\r" not in k)
scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
tables = st.recursive(
    st.dictionaries(keys, scalars | st.lists(scalars, max_size=4), max_size=5),
    lambda children: st.dictionaries(
        keys, scalars | st.lists(scalars, max_size=4) | children, max_size=4
    ),
    max_leaves=20,
)


@given(tables)
def test_dumps_round_trips(data: dict[str, object]) -> None:
    assert tomllib.loads(dumps(data)) == data


def test_none_is_a_comment() -> None:
    text = dumps({"a": None, "t": {"b": None, "c": 1}})
    assert tomllib.loads(text) == {"t": {"c": 1}}
    assert "# a: not set" in text


def test_parse_value() -> None:
    assert parse_value("1884") == 1884
    assert parse_value("true") is True
    assert parse_value('["a", 2]') == ["a", 2]
    assert parse_value("broker.lan") == "broker.lan"
    assert parse_value('"quoted"') == "quoted"
