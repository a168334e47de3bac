"""Form fields derived from sedic.schedule: the schedule overrides of POST /v1/compress.

One optional field per ScheduleOverrides field, with the record's name, type (an enum for a
named choice) and help text, so a new override appears in the form and the OpenAPI schema
without an edit here."""

from __future__ import annotations

import inspect
from typing import Any, get_type_hints

from fastapi import Form

from ..schedule import OVERRIDES, ScheduleOverrides


def schedule_form(**given: Any) -> dict[str, Any]:
    """The overrides a request gave, as the API's `schedule` dict (sedic.compress checks them)."""
    return {name: value for name, value in given.items() if value is not None}


_TYPES = get_type_hints(ScheduleOverrides)
# FastAPI reads a dependency's parameters from its signature: one keyword per override
schedule_form.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # functions take the attribute
    [inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, annotation=_TYPES[spec.name],
                       default=Form(None, description=f"{spec.help}; stored in the file (default: the profile's)"))
     for spec in OVERRIDES])
