"""ApiVersions (key 18): the version table, and the v0-format answer to versions we don't speak."""

from __future__ import annotations

from kio.schema.api_versions.v0.response import ApiVersion as ApiVersionV0
from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsResponseV0
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.static.primitive import i16

from service.errors import ErrorCode
from service.kafka.context import RequestContext, Response
from service.kafka.messages import encode_response
from service.kafka.versions import API_RANGES


def unsupported_version_answer(correlation_id: int) -> bytes:
    """Kafka answers an ApiVersions version it doesn't know with a v0 body: error 35 + the keys."""
    keys = tuple(ApiVersionV0(api_key=i16(r.key), min_version=i16(r.min), max_version=i16(r.max))
                 for r in API_RANGES.values())
    return encode_response(correlation_id, ApiVersionsResponseV0(
        error_code=ErrorCode.unsupported_version, api_keys=keys))


async def handle(ctx: RequestContext, req: ApiVersionsRequest) -> Response:
    s = ctx.schema
    keys = tuple(s("ApiVersion", api_key=r.key, min_version=r.min, max_version=r.max)
                 for r in API_RANGES.values())
    return s.response(error_code=ErrorCode.none, api_keys=keys, throttle_time=0)
