"""The wire format: JSON text frames ``{"type": ..., "payload": {...}}``.

Builders for the frames this library sends and typed views of the session
replies it reads (``welcome``). Field names are the protocol's (camelCase);
the Python views use snake_case. Nothing here does I/O.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

JsonObject = dict[str, Any]


def encode(kind: str, payload: JsonObject) -> str:
    """One frame as the text of a WebSocket message."""
    return json.dumps({"type": kind, "payload": payload}, separators=(",", ":"))


def decode(text: str) -> tuple[str, JsonObject]:
    """The type and payload of a frame; a missing or ``null`` payload is ``{}``.

    Raises ``ValueError`` when the text is not a frame.
    """
    value = json.loads(text)
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ValueError("not a frame: expected an object with a string type")
    payload = value.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ValueError(f"frame {value['type']} has a payload that is not an object")
    return value["type"], payload


def now_ms() -> int:
    """The current time in milliseconds since the Unix epoch."""
    return int(time.time() * 1000)


def call_requested(
    request_id: str,
    operation_id: str,
    input: Any,
    *,
    parent_request_id: str | None = None,
    timeout_ms: int | None = None,
    idle_timeout_ms: int | None = None,
    metadata: dict[str, str] | None = None,
) -> str:
    """A ``call.requested`` frame (§4.1); ``timeout_ms`` becomes the absolute ``deadline``."""
    payload: JsonObject = {"requestId": request_id, "operationId": operation_id}
    if input is not None:
        payload["input"] = input
    if parent_request_id is not None:
        payload["parentRequestId"] = parent_request_id
    if timeout_ms is not None:
        payload["deadline"] = now_ms() + max(0, int(timeout_ms))
    if idle_timeout_ms is not None:
        payload["idleTimeout"] = max(0, int(idle_timeout_ms))
    if metadata:
        payload["metadata"] = dict(metadata)
    return encode("call.requested", payload)


def call_responded(request_id: str, output: JsonObject) -> str:
    """A ``call.responded`` frame carrying the response envelope ``output``."""
    return encode("call.responded", {"requestId": request_id, "output": output})


def call_completed(request_id: str) -> str:
    """A ``call.completed`` frame: a subscription ended normally."""
    return encode("call.completed", {"requestId": request_id})


def call_aborted(request_id: str) -> str:
    """A ``call.aborted`` frame: stop the call."""
    return encode("call.aborted", {"requestId": request_id})


def call_error(request_id: str, code: str | None, message: str, details: Any = None) -> str:
    """A ``call.error`` frame; without ``code`` the hub reports ``EXECUTION_ERROR``."""
    payload: JsonObject = {"requestId": request_id, "message": message}
    if code is not None:
        payload["code"] = code
    if details is not None:
        payload["details"] = details
    return encode("call.error", payload)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class Principal:
    """A spoke or client as the hub knows it: ``kind``, ``id`` and ``scopes``."""

    kind: str
    id: str
    scopes: tuple[str, ...] = ()

    @classmethod
    def from_payload(cls, value: Any) -> Principal | None:
        """The principal of a ``{"kind", "id", "scopes"}`` object, or None."""
        if not isinstance(value, dict):
            return None
        scopes = value.get("scopes")
        return cls(
            kind=_str(value.get("kind")),
            id=_str(value.get("id")),
            scopes=tuple(s for s in scopes if isinstance(s, str)) if isinstance(scopes, list) else (),
        )


@dataclass(frozen=True)
class Registration:
    """A declared operation the hub registered, under ``operation_id`` (post-remap)."""

    operation_id: str
    pre_remap_id: str
    registration_id: str


@dataclass(frozen=True)
class Rejection:
    """A declared operation the hub refused, with the code and message why."""

    operation_id: str
    code: str
    message: str


@dataclass(frozen=True)
class Welcome:
    """The hub's answer to ``hello`` (§2.2)."""

    session_id: str
    principal: Principal | None
    heartbeat_ms: int
    registrations: tuple[Registration, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    warnings: tuple[JsonObject, ...] = ()

    @classmethod
    def from_payload(cls, payload: JsonObject) -> Welcome:
        """The welcome a ``welcome`` payload describes."""
        heartbeat = payload.get("heartbeatMs")
        return cls(
            session_id=_str(payload.get("sessionId")),
            principal=Principal.from_payload(payload.get("principal")),
            heartbeat_ms=heartbeat if isinstance(heartbeat, int) else 0,
            registrations=tuple(
                Registration(
                    operation_id=_str(r.get("operationId")),
                    pre_remap_id=_str(r.get("preRemapId")),
                    registration_id=_str(r.get("registrationId")),
                )
                for r in _objects(payload.get("registrations"))
            ),
            rejected=tuple(
                Rejection(
                    operation_id=_str(r.get("operationId")),
                    code=_str(r.get("code")),
                    message=_str(r.get("message")),
                )
                for r in _objects(payload.get("rejected"))
            ),
            warnings=tuple(_objects(payload.get("warnings"))),
        )


def _objects(value: Any) -> list[JsonObject]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
