"""IncrementalAlterConfigs (key 44): SET, DELETE, APPEND and SUBTRACT on single topic configs."""

from __future__ import annotations

from typing import Any

from kio.schema.incremental_alter_configs.v1.request import IncrementalAlterConfigsRequest

from service.config import TOPIC_KEYS
from service.errors import ErrorCode, TopicError
from service.kafka.apis.configs import alter_result
from service.kafka.context import RequestContext, Response

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def _apply(ops: Any, old: dict[str, str]) -> dict[str, str]:
    new = dict(old)
    for c in ops:
        op = int(c.config_operation)
        if op == SET:
            if c.value is None:
                raise TopicError(ErrorCode.invalid_config, f"Null value not supported for {c.name}")
            new[c.name] = c.value
        elif op == DELETE:
            new.pop(c.name, None)
        elif op in (APPEND, SUBTRACT):
            d = TOPIC_KEYS.get(c.name)
            if d is None or d.type != "list":
                raise TopicError(ErrorCode.invalid_config, f"Config {c.name} is not a list: APPEND/SUBTRACT apply "
                                                 "only to list configs.")
            current = [v for v in new.get(c.name, d.default_string or "").split(",") if v]
            items = [v for v in (c.value or "").split(",") if v]
            if op == APPEND:
                current += [v for v in items if v not in current]
            else:
                current = [v for v in current if v not in items]
            new[c.name] = ",".join(current)
        else:
            raise TopicError(ErrorCode.invalid_config, f"Unknown config operation {op} for {c.name}")
    return new


async def handle(ctx: RequestContext, req: IncrementalAlterConfigsRequest) -> Response:
    results = []
    for r in req.resources:
        results.append(await alter_result(ctx, r, lambda old, ops=r.configs: _apply(ops, old),  # type: ignore[misc]  # lambda with a default
                                          bool(req.validate_only)))
    return ctx.schema.response(throttle_time=0, responses=tuple(results))
