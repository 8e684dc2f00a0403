"""Shared model configuration: camelCase on the wire, snake_case in Python.

Every spec model forbids unknown fields, so a typo in a review is an error that
names the field rather than a silently ignored setting.
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from pydantic.alias_generators import to_camel

from postdeploy.kit import durations

__all__ = ["Duration", "SpecModel", "StatusModel", "cel"]


class SpecModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def dump(self) -> dict[str, Any]:
        """The wire form: camelCase, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore"
    )

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _check_duration(value: str) -> str:
    durations.parse_duration(value)
    return value


Duration = Annotated[
    str,
    pydantic.Field(
        pattern=durations.PATTERN, max_length=32, json_schema_extra={"x-postdeploy-duration": True}
    ),
    pydantic.AfterValidator(_check_duration),
]


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` for CEL rules: pairs of (rule, message)."""
    return {
        "x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]
    }
