"""Value conversions agree with the libraries' own: protobuf's timestamps, the uuid
module's canonical UUIDs, and json.loads for the database's JSON columns."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from server.api.convert.values import set_timestamp, timestamp
from server.domain.ids import is_uuid
from server.store.db import loads_json

ZONES = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)).map(
        lambda offset: timedelta(minutes=offset // timedelta(minutes=1))
    ),
)


@given(st.datetimes(timezones=st.just(UTC) | ZONES))
def test_set_timestamp_is_protobufs_from_datetime(value: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value.astimezone(UTC))
    field = timestamp_pb2.Timestamp()
    set_timestamp(field, value)
    assert field == expected
    assert timestamp(value) == expected
    assert field.ToDatetime(tzinfo=UTC) == value


def test_timestamp_of_none_stays_unset() -> None:
    assert timestamp(None) is None


@given(st.uuids())
def test_canonical_uuids_in_either_case_are_uuids(value: uuid.UUID) -> None:
    assert is_uuid(str(value))
    assert is_uuid(str(value).upper())


@given(st.text(max_size=40))
def test_is_uuid_agrees_with_the_uuid_module(text: str) -> None:
    try:
        canonical = str(uuid.UUID(text)) == text.lower() and len(text) == 36
    except ValueError:
        canonical = False
    assert is_uuid(text) == canonical


def test_uuid_look_alikes_are_refused() -> None:
    good = "01a22f38-cd73-7669-b500-3fffffef3c3d"
    for bad in (
        good.replace("-", ""),
        "{" + good + "}",
        "urn:uuid:" + good,
        good + "\n",
        " " + good,
        good[:8] + "_" + good[9:],
        good.replace("0", "\u0660"),  # an Arabic-Indic zero: int() reads it, UUIDs do not
        good[:-1] + "g",
    ):
        assert not is_uuid(bad), bad


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(JSON_VALUES, st.sampled_from([None, 0, 2]))
def test_json_columns_decode_as_json_loads(value: object, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    assert loads_json(text) == json.loads(text)


def test_empty_json_values_are_fresh_objects() -> None:
    for text in ("{}", "[]", "null"):
        assert loads_json(text) == json.loads(text)
    first, second = loads_json("{}"), loads_json("{}")
    first["changed"] = True
    assert second == {} and loads_json("[]") is not loads_json("[]")
