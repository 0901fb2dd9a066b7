"""The mock's schema generator: the smallest valid instance of schemas as pydantic, openai-python and
LangChain emit them, checked with `jsonschema` and by parsing the value back into the pydantic model."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from enum import Enum
from typing import Annotated, Literal, Optional, Union

import jsonschema
import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from proxy.providers.mock_pattern import sample
from proxy.providers.mock_schema import SchemaError, instance

HINT = "Mock answer to: hello"
DRAFT4 = "http://json-schema.org/draft-04/schema#"


def valid(schema, hint: str | None = HINT):
    """The generated value, after checking that the schema accepts it."""
    value = instance(schema, hint)
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
    return value


# -- pydantic models, as clients send them -------------------------------------------------


class Color(str, Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str
    city: str
    zip_code: Annotated[str, Field(pattern=r"^\d{5}$")]
    country: str = "FR"


class Person(BaseModel):
    name: str
    age: Annotated[int, Field(ge=18, le=130)]
    email: Optional[str] = None
    favourite: Color
    mood: Literal["happy", "sad"]
    addresses: list[Address]
    home: Address
    nickname: Optional[str]
    born: dt.datetime
    tags: Annotated[list[str], Field(min_length=2)]
    scores: dict[str, float] = {}


class Tree(BaseModel):
    label: str
    children: list[Tree]


class Chain(BaseModel):
    value: int
    next: Optional[Chain]


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: Annotated[int, Field(gt=0, lt=10)]


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Pets(BaseModel):
    pet: Annotated[Union[Cat, Dog], Field(discriminator="kind")]
    others: list[Union[Dog, Cat]]


class Constrained(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Annotated[str, Field(min_length=3, max_length=3)]
    short: Annotated[str, Field(max_length=4)]
    ratio: Annotated[float, Field(gt=0, lt=1)]
    step: Annotated[int, Field(multiple_of=7, gt=10)]
    negative: Annotated[int, Field(lt=-3)]
    price: Decimal
    ident: uuid.UUID
    day: dt.date
    at: dt.time
    wait: dt.timedelta
    site: HttpUrl
    pair: tuple[int, str]
    unique: Annotated[set[int], Field(min_length=3)]
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    anything: object


MODELS = [Person, Tree, Chain, Pets, Constrained, Address]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_pydantic_schema_instance_validates_and_parses(model):
    value = valid(model.model_json_schema())
    model.model_validate(value)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_openai_strict_schema_instance_validates_and_parses(model):
    """openai-python's `.parse()` makes every property required and forbids extra ones."""
    schema = to_strict_json_schema(model)
    value = valid(schema)
    model.model_validate(value)


def test_only_required_properties_and_the_hint_in_the_first_free_string():
    value = valid(Person.model_json_schema())
    assert value["name"] == HINT  # the first string property carries the text
    assert "email" not in value and "scores" not in value  # optional: left out
    assert value["nickname"] is None or isinstance(value["nickname"], str)  # required Optional
    assert value["age"] == 18 and value["favourite"] == "red" and value["mood"] == "happy"
    assert value["addresses"] == [] and len(value["tags"]) == 2
    assert value["home"]["city"] == "" and value["home"]["zip_code"] == "00000"
    dt.datetime.fromisoformat(value["born"].replace("Z", "+00:00"))


def test_recursive_models_end_on_empty_lists_and_null():
    assert valid(Tree.model_json_schema()) == {"label": HINT, "children": []}
    assert valid(to_strict_json_schema(Chain)) == {"value": 0, "next": None}


def test_constraints_are_honoured():
    value = valid(Constrained.model_json_schema())
    assert value["code"] == "xxx" and value["short"] == ""  # the hint does not fit either
    assert 0 < value["ratio"] < 1
    assert value["step"] == 14 and value["negative"] == -4
    assert len(set(value["unique"])) == 3
    assert value["country"] == "AA"
    Constrained.model_validate(value)


def test_defaults_const_and_enum_come_first():
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer", "default": 42}, "b": {"const": "fixed"}, "c": {"enum": [3, 1]}},
        "required": ["a", "b", "c"],
    }
    assert valid(schema) == {"a": 42, "b": "fixed", "c": 3}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "integer", "minimum": 3}, 3),
        ({"type": "integer", "maximum": -2}, -2),
        ({"type": "integer", "exclusiveMinimum": 3, "multipleOf": 5}, 5),
        ({"type": "integer", "minimum": 0.5}, 1),
        ({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5}, 0.25),
        ({"$schema": DRAFT4, "type": "number", "minimum": 2, "exclusiveMinimum": True}, 3),
        ({"type": "number", "maximum": -2.5}, -2.5),
        ({"type": ["null", "string"]}, None),
        ({"type": ["string", "null"]}, HINT),
        ({"type": "string", "minLength": 30}, "x" * 30),
        ({"type": "string", "maxLength": 3}, ""),
        ({"type": "string", "format": "date-time"}, "2024-01-01T00:00:00Z"),
        ({"type": "string", "format": "email"}, "mock@example.com"),
        ({"type": "string", "format": "uri"}, "https://example.com/"),
        ({"type": "string", "format": "uuid"}, "00000000-0000-4000-8000-000000000000"),
        ({"type": "string", "pattern": r"^[a-z]+-\d{2,}(x|y)?$"}, "a-00"),
        ({"type": "boolean"}, False),
        ({"type": "null"}, None),
        ({}, None),
        ({"type": "array", "items": {"type": "boolean"}, "minItems": 2, "uniqueItems": True}, [False, True]),
        ({"type": "array", "prefixItems": [{"const": 1}, {"type": "string"}], "minItems": 2}, [1, HINT]),
        ({"$schema": DRAFT4, "type": "array", "items": [{"enum": ["draft4"]}], "minItems": 1}, ["draft4"]),
        ({"type": "array", "contains": {"const": 7}}, [7]),
        ({"type": "object", "minProperties": 1, "additionalProperties": {"type": "integer"}}, {"key0": 0}),
        ({"properties": {"x": {"type": "integer"}}, "required": ["x"]}, {"x": 0}),  # no `type`: object
        ({"anyOf": [{"type": "string", "minLength": 99, "maxLength": 1}, {"type": "integer"}]}, 0),
        ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, HINT),
        ({"allOf": [{"type": "number"}, {"type": "integer", "minimum": 2}]}, 2),
    ],
)
def test_raw_schemas(schema, expected):
    assert valid(schema) == expected


def test_refs_as_langchain_and_older_pydantic_emit_them():
    schema = {
        "type": "object",
        "definitions": {"Item": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}},
        "properties": {
            "first": {"allOf": [{"$ref": "#/definitions/Item"}], "description": "the first"},
            "more": {"type": "array", "items": {"$ref": "#/definitions/Item"}, "minItems": 1},
            "self": {"$ref": "#/properties/first"},
        },
        "required": ["first", "more", "self"],
    }
    assert valid(schema) == {"first": {"n": 1}, "more": [{"n": 1}], "self": {"n": 1}}


def test_the_hint_goes_where_it_fits_only_once():
    schema = {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date"},
            "pick": {"enum": ["x", "y"]},
            "tiny": {"type": "string", "maxLength": 2},
            "text": {"type": "string"},
            "more": {"type": "string"},
        },
        "required": ["when", "pick", "tiny", "text", "more"],
    }
    assert valid(schema) == {"when": "2024-01-01", "pick": "x", "tiny": "", "text": HINT, "more": ""}
    assert valid(schema, hint=None)["text"] == ""


def test_a_failed_branch_gives_the_hint_back():
    schema = {
        "type": "object",
        "properties": {
            "a": {"anyOf": [{"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 0}, {"type": "null"}]},
            "b": {"type": "string"},
        },
        "required": ["a", "b"],
    }
    assert valid(schema) == {"a": None, "b": HINT}


@pytest.mark.parametrize(
    "schema",
    [
        False,
        {"type": "integer", "minimum": 5, "maximum": 4},
        {"type": "integer", "minimum": 1, "maximum": 6, "multipleOf": 7},
        {"type": "string", "minLength": 5, "maxLength": 2},
        {"allOf": [{"type": "string"}, {"type": "integer"}]},
        {"$ref": "#/$defs/missing"},
        {"type": "array", "items": {"type": "string"}, "minItems": 10**9},
        {"type": "string", "minLength": 10**9},
        {"type": "array", "minItems": 1000, "items": {"type": "array", "minItems": 1000, "items": {"type": "integer"}}},
        {"$defs": {"Loop": {"type": "object", "properties": {"me": {"$ref": "#/$defs/Loop"}}, "required": ["me"]}},
         "$ref": "#/$defs/Loop"},
    ],
)
def test_schemas_without_an_instance_raise(schema):
    with pytest.raises(SchemaError):
        instance(schema, HINT)


@pytest.mark.parametrize(
    "pattern", [r"^\d{5}$", r"^[A-Z]{2}-[^abc]\.?$", r"^(?:foo|bar)+\s\w*$", r"[A-Fa-f0-9]{8}", r"^x*$", r"^\S+@\S+$"]
)
def test_pattern_samples_match(pattern):
    import re

    text = sample(pattern)
    assert text is not None and re.search(pattern, text), (pattern, text)


def test_pattern_beyond_the_sampler_gives_none():
    assert sample(r"^(a)\1$") is None  # a back-reference
    assert sample("[") is None  # not a regex at all
    assert sample(r"^(a{1000}){1000}$") is None  # longer than the sampler builds
