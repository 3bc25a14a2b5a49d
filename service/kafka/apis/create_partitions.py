"""CreatePartitions (key 37): grow a topic's partition count."""

from __future__ import annotations

from kio.schema.create_partitions.v3.request import CreatePartitionsRequest

from service.errors import TopicError
from service.kafka.apis.authz import ALTER, TOPIC, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: CreatePartitionsRequest) -> Response:
    s, topics = ctx.schema, ctx.topics
    results = []
    for t in req.topics:
        code, message = check(ctx, ALTER, TOPIC, t.name), None
        try:
            if not code:
                await topics.create_partitions(t.name, int(t.count), validate_only=bool(req.validate_only))
        except TopicError as e:
            code, message = e.code, e.message
        results.append(s("CreatePartitionsTopicResult", name=t.name, error_code=code, error_message=message))
    return s.response(throttle_time=0, results=tuple(results))
