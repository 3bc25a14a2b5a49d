"""DeleteTopics (key 20): by name, or by topic id from v6."""

from __future__ import annotations

import uuid

from kio.schema.delete_topics.v6.request import DeleteTopicsRequest

from service.errors import ErrorCode, TopicError
from service.kafka.apis.authz import DELETE, TOPIC, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: DeleteTopicsRequest) -> Response:
    s, topics = ctx.schema, ctx.topics
    wanted: list[tuple[str | None, uuid.UUID | None]]
    topic_names = getattr(req, "topic_names", None)  # v1-5: names only, in a field v6 replaced with `topics`
    if topic_names is not None:
        wanted = [(name, None) for name in topic_names]
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
