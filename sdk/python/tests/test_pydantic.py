"""Pydantic v2 models as input and output schemas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import Peers
from helpers import wait
from pydantic import BaseModel, Field

from alkhub import CallContext, ValidationError


class Point(BaseModel):
    x: int
    y: int = Field(default=0, ge=0)


class Distance(BaseModel):
    squared: int
    origin: Point


async def test_pydantic_models_declare_schemas_and_convert_values(peers: Peers) -> None:
    spoke = await peers.spoke("edge")
    received: list[Any] = []

    @spoke.query("geo.distance", input_schema=Point, output_schema=Distance)
    async def distance(point: Point, ctx: CallContext) -> Distance:
        received.append(point)
        return Distance(squared=point.x**2 + point.y**2, origin=Point(x=0))

    @spoke.subscription("geo.walk", input_schema=Point, output_schema=Point)
    async def walk(start: Point, ctx: CallContext) -> AsyncIterator[Point]:
        for step in range(3):
            yield Point(x=start.x + step, y=start.y)

    welcome = await wait(spoke.start())
    assert welcome.rejected == ()
    client = await peers.client("app")

    assert await wait(client.call("geo.distance", {"x": 3, "y": 4})) == {
        "squared": 25,
        "origin": {"x": 0, "y": 0},
    }
    assert received == [Point(x=3, y=4)]
    # A model is accepted as input on the caller's side too.
    assert (await wait(client.call("geo.distance", Point(x=1))))["squared"] == 1
    assert [p async for p in client.subscribe("geo.walk", {"x": 1, "y": 2})] == [
        {"x": 1, "y": 2}, {"x": 2, "y": 2}, {"x": 3, "y": 2},
    ]

    entry = await wait(client.call("hub.operations.get", {"operationId": "geo.distance"}))
    assert entry["inputSchema"] == Point.model_json_schema()
    assert entry["outputSchema"] == Distance.model_json_schema()

    # The hub checks the model's schema before the call reaches the handler.
    with pytest.raises(ValidationError) as invalid:
        await wait(client.call("geo.distance", {"x": 1, "y": -1}))
    assert invalid.value.details["errors"][0]["instancePath"] == "/y"
    assert len(received) == 2


def test_a_failed_model_validation_is_a_validation_error() -> None:
    from alkhub.operations import define

    async def handler(point: Point, ctx: CallContext) -> None:
        return None

    op = define("geo.check", "query", handler, input_schema=Point)
    assert op.spec()["inputSchema"] == Point.model_json_schema()
    assert op.load_input({"x": 1}) == Point(x=1)
    with pytest.raises(ValidationError) as invalid:
        op.load_input({"x": "not a number"})
    assert invalid.value.details["errors"][0]["instancePath"] == "/x"
