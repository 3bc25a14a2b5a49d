"""AlterUserScramCredentials (key 51, v0): upsert or delete users' SCRAM credentials.

The admin client sends the salted password (it runs Hi itself); only StoredKey and ServerKey
derived from it are kept. A user's alterations in one request apply all together or not at all.
"""

from __future__ import annotations

from collections import Counter

from kio.schema.alter_user_scram_credentials.v0.request import (
    AlterUserScramCredentialsRequest,
    ScramCredentialDeletion,
    ScramCredentialUpsertion,
)

from security.credentials import (
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    SCRAM_BY_WIRE_ID,
    ScramCredential,
    ScramMechanism,
    credential_from_salted,
)
from service.errors import ErrorCode
from service.kafka.apis.authz import ALTER, cluster_allows
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: AlterUserScramCredentialsRequest) -> Response:
    s, access = ctx.schema, ctx.access
    alterations: tuple[ScramCredentialDeletion | ScramCredentialUpsertion, ...] = (*req.deletions, *req.upsertions)
    if not cluster_allows(ctx, ALTER):
        users = dict.fromkeys(a.name for a in alterations)
        return s.response(throttle_time=0, results=tuple(
            s("AlterUserScramCredentialsResult", user=u, error_code=ErrorCode.cluster_authorization_failed,
              error_message="Cluster authorization failed.") for u in users))
    seen = Counter((a.name, int(a.mechanism)) for a in alterations)
    errors: dict[str, tuple[ErrorCode, str]] = {}
    deletes: dict[str, list[str]] = {}
    upserts: dict[str, list[tuple[str, ScramCredential]]] = {}

    def fail(user: str, code: ErrorCode, message: str) -> None:
        errors.setdefault(user, (code, message))

    for d in req.deletions:
        mech = SCRAM_BY_WIRE_ID.get(int(d.mechanism))
        error = _shared_error(d, mech, seen)
        if error is None and mech is not None and access.credentials.get(d.name, mech.name) is None:
            error = ErrorCode.resource_not_found, "Attempt to delete a user credential that does not exist"
        if error is not None:
            fail(d.name, *error)
        elif mech is not None:  # always: an unknown mechanism is an error above
            deletes.setdefault(d.name, []).append(mech.name)
    for u in req.upsertions:
        mech = SCRAM_BY_WIRE_ID.get(int(u.mechanism))
        iterations = int(u.iterations)
        error = _shared_error(u, mech, seen)
        if error is None and mech is not None:  # mech is known once the shared checks pass
            error = _credential_error(u, mech, iterations)
        if error is not None:
            fail(u.name, *error)
        elif mech is not None:  # always: an unknown mechanism is an error above
            cred = credential_from_salted(mech, bytes(u.salt), bytes(u.salted_password), iterations)
            upserts.setdefault(u.name, []).append((mech.name, cred))

    results = []
    for user in dict.fromkeys(a.name for a in alterations):
        if user in errors:
            code, message = errors[user]
            results.append(s("AlterUserScramCredentialsResult", user=user, error_code=code, error_message=message))
            continue
        for mech_name in deletes.get(user, ()):
            await access.delete_scram_credential(user, mech_name)
        for mech_name, cred in upserts.get(user, ()):
            await access.put_scram_credential(user, mech_name, cred)
        results.append(s("AlterUserScramCredentialsResult", user=user, error_code=ErrorCode.none, error_message=None))
    return s.response(throttle_time=0, results=tuple(results))


def _shared_error(alteration: ScramCredentialDeletion | ScramCredentialUpsertion, mech: ScramMechanism | None,
                  seen: Counter[tuple[str, int]]) -> tuple[ErrorCode, str] | None:
    """The checks deletions and upsertions share: a name, a known mechanism, once per request."""
    if not alteration.name:
        return ErrorCode.unacceptable_credential, "Username must not be empty"
    if mech is None:
        return ErrorCode.unsupported_sasl_mechanism, "Unknown SCRAM mechanism"
    if seen[(alteration.name, int(alteration.mechanism))] > 1:
        return ErrorCode.duplicate_resource, "A user credential cannot be altered twice in the same request"
    return None


def _credential_error(u: ScramCredentialUpsertion, mech: ScramMechanism, iterations: int
                      ) -> tuple[ErrorCode, str] | None:
    if iterations < MIN_ITERATIONS:
        return ErrorCode.unacceptable_credential, f"Too few iterations (minimum {MIN_ITERATIONS})"
    if iterations > MAX_ITERATIONS:
        return ErrorCode.unacceptable_credential, f"Too many iterations (maximum {MAX_ITERATIONS})"
    if not u.salt or len(u.salted_password) != mech.digest_size:
        return ErrorCode.unacceptable_credential, "Salt or salted password is missing or malformed"
    return None
