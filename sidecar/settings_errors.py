"""A settings problem as one line that names the variable: what the sidecar prints before it exits,
instead of pydantic's traceback. The values themselves are never quoted: some are keys."""

from __future__ import annotations

import re

from pydantic import ValidationError
from pydantic_settings import SettingsError as PydanticSettingsError


class SettingsError(Exception):
    """A setting is missing or wrong; the message names the variable and never echoes a secret."""


def describe_validation_error(exc: ValidationError, *, prefix: str) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required"
        # A check across settings names its variables itself.
        problems.append(f"{prefix}{field.upper()}: {message}" if field else message)
    return "; ".join(problems)


def describe_source_error(exc: PydanticSettingsError, *, prefix: str) -> str:
    """pydantic-settings raises this for a complex value (a JSON object) that doesn't parse."""
    field = re.search(r'field "(\w+)"', str(exc))
    name = f"{prefix}{field.group(1).upper()}" if field else "settings"
    return f"{name}: is not valid JSON"
