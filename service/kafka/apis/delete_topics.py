"""DeleteTopics (key 20): by name, or by topic id from v6."""

from __future__ import annotations

from typing import Any

from service.errors import ErrorCode, TopicError
from service.kafka.apis.authz import DELETE, TOPIC, check
from service.kafka.context import RequestContext


async def handle(ctx: RequestContext, req: Any) -> Any:
    s, topics = ctx.schema, ctx.topics
    if hasattr(req, "topic_names"):
        wanted = [(name, None) for name in req.topic_names]
    else:
        wanted = [(t.name, t.topic_id) for t in req.topics]
    results = []
    for name, topic_id in wanted:
        if name is None:
            if topic_id is None:  # v6 entries name a topic or give its id (the zero id reads as None)
                results.append(s("DeletableTopicResult", name=None, topic_id=None, error_code=ErrorCode.invalid_request,
                                 error_message="Neither topic name nor id were specified."))
                continue
            rec = topics.by_id(topic_id)
            if rec is None:
                results.append(s("DeletableTopicResult", name=None, topic_id=topic_id,
                                 error_code=ErrorCode.unknown_topic_id, error_message="Unknown topic id."))
                continue
            name = rec.name
        rec = topics.get(name)
        code, message = check(ctx, DELETE, TOPIC, name), None
        try:
            if not code:
                await topics.delete(name)
        except TopicError as e:
            code, message = e.code, e.message
        results.append(s("DeletableTopicResult", name=name,
                         topic_id=topic_id or (rec.topic_id if rec else None),
                         error_code=code, error_message=message))
    ctx.span_attributes["messaging.kafka.topics"] = ",".join(str(n) for n, _ in wanted)
    return s.response(throttle_time=0, responses=tuple(results))
