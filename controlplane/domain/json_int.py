"""``JsonInt``: a whole number as JSON Schema means it, strictly otherwise.

JSON Schema (and so the OpenAPI document a client is generated from) counts
``3.0`` as an integer, so a client may well send it. Everything else stays
as strict as pydantic's ``StrictInt``: ``true`` is not 1, ``"10"`` is not 10
and ``2.5`` is no count at all.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Strict

__all__ = ["WHOLE_FLOAT", "JsonInt"]


def _whole_float_as_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: put last in an ``Annotated`` with bounds before it (``Annotated[int, Strict(), Interval(...), WHOLE_FLOAT]``):
#: bounds after it are lost from the JSON schema
WHOLE_FLOAT = BeforeValidator(_whole_float_as_int)
JsonInt = Annotated[int, Strict(), WHOLE_FLOAT]
