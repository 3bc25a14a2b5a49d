"""SaslAuthenticate (key 36, v0-2): one SASL token each way, after a SaslHandshake v1."""

from __future__ import annotations

from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest

from service.errors import ErrorCode
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: SaslAuthenticateRequest) -> Response:
    session = ctx.conn.sasl
    if session is None:  # not a SASL listener
        return ctx.schema.response(error_code=ErrorCode.illegal_sasl_state, error_message="Not a SASL listener",
                                   auth_bytes=b"", session_lifetime=0)
    out = await session.authenticate(ctx.conn, bytes(req.auth_bytes))
    return ctx.schema.response(error_code=out.error_code, error_message=out.error_message,
                               auth_bytes=out.auth_bytes, session_lifetime=out.session_lifetime_ms)
