"""SaslHandshake (key 17, v0-1): choose the SASL mechanism (and, with v0, the unframed token path)."""

from __future__ import annotations

from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

from service.errors import ErrorCode
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: SaslHandshakeRequest) -> Response:
    session = ctx.conn.sasl
    if session is None:  # not a SASL listener
        return ctx.schema.response(error_code=ErrorCode.illegal_sasl_state, mechanisms=())
    code = session.handshake(ctx.conn, req.mechanism, ctx.version)
    return ctx.schema.response(error_code=code, mechanisms=tuple(session.mechanisms.enabled))
