"""DescribeUserScramCredentials (key 50, v0): which SCRAM mechanisms and iterations each user has."""

from __future__ import annotations

from collections import Counter

from kio.schema.describe_user_scram_credentials.v0.request import DescribeUserScramCredentialsRequest

from security.credentials import SCRAM_MECHANISMS
from service.errors import ErrorCode
from service.kafka.apis.authz import DESCRIBE, cluster_allows
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: DescribeUserScramCredentialsRequest) -> Response:
    s, creds = ctx.schema, ctx.access.credentials
    if not cluster_allows(ctx, DESCRIBE):
        return s.response(throttle_time=0, error_code=ErrorCode.cluster_authorization_failed,
                          error_message="Cluster authorization failed.", results=())
    named = [u.name for u in req.users or ()]
    results = []
    if not named:
        named = creds.users()
    counts = Counter(named)
    for user in dict.fromkeys(named):
        if counts[user] > 1:
            results.append(s("DescribeUserScramCredentialsResult", user=user,
                             error_code=ErrorCode.duplicate_resource,
                             error_message="Cannot describe SCRAM credentials for the same user twice in a "
                                           f"single request: {user}", credential_infos=()))
            continue
        stored = creds.of_user(user)
        if not stored:
            results.append(s("DescribeUserScramCredentialsResult", user=user,
                             error_code=ErrorCode.resource_not_found,
                             error_message=f"Attempt to describe a user credential that does not exist: {user}",
                             credential_infos=()))
            continue
        infos = tuple(s("CredentialInfo", mechanism=SCRAM_MECHANISMS[m].wire_id, iterations=c.iterations)
                      for m, c in sorted(stored.items()))
        results.append(s("DescribeUserScramCredentialsResult", user=user, error_code=ErrorCode.none, error_message=None,
                         credential_infos=infos))
    return s.response(throttle_time=0, error_code=ErrorCode.none, error_message=None, results=tuple(results))
