"""DeleteTopics v6 names each topic by name or by id: an entry with neither is answered
INVALID_REQUEST on its own, as Kafka does, and never reaches the authorizer or the topics."""

from __future__ import annotations

import datetime
from types import SimpleNamespace
from typing import Any

from kio.schema.delete_topics.v6.request import DeleteTopicsRequest, DeleteTopicState
from kio.schema.types import TopicName
from kio.static.primitive import i32Timedelta

from security.acl import AclBinding, AclOperation, AclPermission, Authorizer, PatternType, ResourceType
from service.errors import ErrorCode, TopicError
from service.kafka.apis import delete_topics
from service.kafka.context import Connection, RequestContext
from service.kafka.messages import response_schema


class FakeTopics:
    def __init__(self) -> None:
        self.asked: list[Any] = []

    def get(self, name: Any) -> None:
        self.asked.append(name)
        return None

    def by_id(self, topic_id: Any) -> None:
        return None

    async def delete(self, name: Any) -> None:
        self.asked.append(name)
        raise TopicError(ErrorCode.unknown_topic_or_partition, "This server does not host this topic.")


async def test_entry_with_neither_name_nor_id_is_invalid() -> None:
    # A prefixed ACL makes the authorizer compare prefixes with the name it is given.
    access = Authorizer(enabled=True)
    access.add([AclBinding(ResourceType.TOPIC, "tmp-", PatternType.PREFIXED, "User:ANONYMOUS", "*",
                           AclOperation.DELETE, AclPermission.ALLOW)])
    topics = FakeTopics()
    services: Any = SimpleNamespace(topics=topics, access=access)
    ctx = RequestContext(services=services, conn=Connection("PLAINTEXT", "127.0.0.1", 1), api_key=20, version=6,
                         correlation_id=1, client_id="unit", schema=response_schema(20, 6))
    req = DeleteTopicsRequest(topics=(DeleteTopicState(name=None, topic_id=None),
                                      DeleteTopicState(name=TopicName("tmp-a"), topic_id=None)),
                              timeout=i32Timedelta.parse(datetime.timedelta(seconds=1)))
    answer: Any = await delete_topics.handle(ctx, req)
    got = [(r.name, r.topic_id, r.error_code, r.error_message) for r in answer.responses]
    assert got == [
        (None, None, ErrorCode.invalid_request, "Neither topic name nor id were specified."),
        ("tmp-a", None, ErrorCode.unknown_topic_or_partition, "This server does not host this topic."),
    ]
    assert None not in topics.asked
