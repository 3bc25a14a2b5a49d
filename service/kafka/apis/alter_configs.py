"""AlterConfigs (key 33): replace a topic's whole set of overrides (Kafka's legacy semantics)."""

from __future__ import annotations

from kio.schema.alter_configs.v2.request import AlterConfigsRequest

from service.kafka.apis.configs import alter_result
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: AlterConfigsRequest) -> Response:
    results = []
    for r in req.resources:
        new = {c.name: c.value for c in r.configs if c.value is not None}
        results.append(await alter_result(ctx, r, lambda _old, new=new: new,  # type: ignore[misc]  # lambda with a default
                                          bool(req.validate_only)))
    return ctx.schema.response(throttle_time=0, responses=tuple(results))
