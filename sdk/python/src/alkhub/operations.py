"""Operation declarations: the ``OperationSpec`` of §3.1 and the handler serving it.

A schema is a JSON Schema ``dict`` or a pydantic v2 model class (anything
with ``model_json_schema()`` and ``model_validate()``; pydantic itself is
optional). With a model as input schema the handler receives a validated
model instance; results that are models are sent as ``model_dump(mode="json")``.
"""

from __future__ import annotations

import builtins
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ValidationError

OperationType = Literal["query", "mutation", "subscription"]
AccessLevel = Literal["public", "authenticated", "scoped", "internal"]

# `async def handler(input, ctx)` for queries and mutations (a plain function
# works too), an async generator function for subscriptions.
Handler = Callable[[Any, Any], Any]
Schema = dict[str, Any] | type

_SEGMENT = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
_TYPES = ("query", "mutation", "subscription")
_ACCESS = ("public", "authenticated", "scoped", "internal")


@dataclass(frozen=True)
class Operation:
    """One operation a peer serves: its declaration and its handler."""

    namespace: str
    name: str
    type: OperationType
    handler: Handler
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    access: AccessLevel = "authenticated"
    required_scopes: tuple[str, ...] = ()
    input_model: builtins.type | None = None

    @property
    def id(self) -> str:
        """The declared (pre-remap) id, ``namespace.name``."""
        return f"{self.namespace}.{self.name}"

    def spec(self) -> dict[str, Any]:
        """The ``OperationSpec`` sent in ``hello``."""
        spec: dict[str, Any] = {
            "namespace": self.namespace,
            "name": self.name,
            "type": self.type,
            "accessLevel": self.access,
        }
        if self.description is not None:
            spec["description"] = self.description
        if self.input_schema is not None:
            spec["inputSchema"] = self.input_schema
        if self.output_schema is not None:
            spec["outputSchema"] = self.output_schema
        if self.required_scopes:
            spec["requiredScopes"] = list(self.required_scopes)
        return spec

    def load_input(self, raw: Any) -> Any:
        """The handler's input: ``raw``, or an instance of the input model."""
        if self.input_model is None:
            return raw
        try:
            return self.input_model.model_validate(raw)  # type: ignore[attr-defined]
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            raise ValidationError(
                f"input does not match the input model of {self.id}",
                {"errors": _pydantic_errors(e)},
            ) from e


def define(
    operation_id: str,
    type: OperationType,
    handler: Handler,
    *,
    description: str | None = None,
    input_schema: Schema | None = None,
    output_schema: Schema | None = None,
    access: AccessLevel = "authenticated",
    required_scopes: Sequence[str] = (),
) -> Operation:
    """An :class:`Operation` from its id (``namespace.name``) and options, checked."""
    namespace, dot, name = operation_id.rpartition(".")
    segments = namespace.split(".") + [name] if dot else []
    if not segments or not all(_SEGMENT.match(s) for s in segments):
        raise ValueError(
            f"invalid operation id {operation_id!r}: expected namespace.name, "
            "each segment [A-Za-z][A-Za-z0-9_-]*"
        )
    if type not in _TYPES:
        raise ValueError(f"invalid operation type {type!r}: expected one of {_TYPES}")
    if access not in _ACCESS:
        raise ValueError(f"invalid access level {access!r}: expected one of {_ACCESS}")
    return Operation(
        namespace=namespace,
        name=name,
        type=type,
        handler=handler,
        description=description,
        input_schema=json_schema(input_schema),
        output_schema=json_schema(output_schema),
        access=access,
        required_scopes=tuple(required_scopes),
        input_model=input_schema if inspect.isclass(input_schema) else None,
    )


def json_schema(schema: Schema | None) -> dict[str, Any] | None:
    """The JSON Schema of a ``dict`` or of a pydantic model class."""
    if schema is None or isinstance(schema, dict):
        return schema
    to_schema = getattr(schema, "model_json_schema", None)
    if to_schema is None:
        raise TypeError(f"{schema!r} is neither a JSON Schema dict nor a pydantic model")
    result: dict[str, Any] = to_schema()
    return result


def to_json(value: Any) -> Any:
    """``value`` ready for ``json.dumps``: pydantic models are dumped in JSON mode."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    return value


def _pydantic_errors(error: ValueError) -> list[dict[str, str]]:
    errors = getattr(error, "errors", None)
    if not callable(errors):
        return [{"instancePath": "", "message": str(error)}]
    return [
        {
            "instancePath": "".join(f"/{part}" for part in e.get("loc", ())),
            "message": str(e.get("msg", "")),
        }
        for e in errors()
    ]
