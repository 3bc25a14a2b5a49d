"""Access: who may do what (ACLs) and who is who (SCRAM credentials), changed durably.

What handlers use to authorize requests and to change ACLs and credentials; the authorizer and
the credential cache answer from memory, and a change is in the metadata store before it is
applied and answered.
"""

from __future__ import annotations

import asyncio

from security.acl import AclBinding, AclFilter, AclOperation, Authorizer, ResourceType
from security.audit import AuditLog
from security.credentials import CredentialCache, ScramCredential
from service.metadata import MetadataStore


class Access:
    def __init__(self, store: MetadataStore, authorizer: Authorizer, credentials: CredentialCache,
                 audit: AuditLog) -> None:
        self._store = store
        self.authorizer = authorizer
        self.credentials = credentials
        self._audit = audit
        self._acl_lock = asyncio.Lock()

    async def load(self) -> None:
        """ACLs and SCRAM credentials from the metadata store (at start-up)."""
        self.authorizer.add(await self._store.load_acls())
        for user, mechanism, cred in await self._store.load_scram_credentials():
            self.credentials.put(user, mechanism, cred)

    # -- authorization ---------------------------------------------------------------------

    def authorize(self, principal: str, host: str, op: AclOperation, rtype: ResourceType, name: str,
                  *, audit: bool = True) -> bool:
        return self.authorizer.authorize(principal, host, op, rtype, name, audit=audit)

    def authorize_any(self, principal: str, host: str, op: AclOperation, rtype: ResourceType) -> bool:
        """Is `op` allowed on some resource of this type (Kafka's authorizeByResourceType)?"""
        return self.authorizer.authorize_any(principal, host, op, rtype)

    def authorized_operations(self, principal: str, host: str, rtype: ResourceType, name: str) -> int:
        return self.authorizer.authorized_operations(principal, host, rtype, name)

    def matching(self, f: AclFilter) -> list[AclBinding]:
        return self.authorizer.matching(f)

    # -- ACL changes -----------------------------------------------------------------------

    async def create_acls(self, bindings: list[AclBinding], principal: str, host: str) -> None:
        """Store, then apply: the answer goes out only once the bindings are durable."""
        async with self._acl_lock:
            await self._store.put_acls(bindings)
            self.authorizer.add(bindings)
        for b in bindings:
            self._audit.acl_change("CREATE", b, principal, host)

    async def delete_acls(self, filters: list[AclFilter], principal: str, host: str) -> list[list[AclBinding]]:
        """The bindings each filter matched, all deleted (durably) before returning."""
        async with self._acl_lock:
            matched = [self.authorizer.matching(f) for f in filters]
            gone = list({b: None for found in matched for b in found})
            if gone:
                await self._store.delete_acls(gone)
                self.authorizer.remove(gone)
        for b in gone:
            self._audit.acl_change("DELETE", b, principal, host)
        return matched

    # -- SCRAM credentials -----------------------------------------------------------------

    async def put_scram_credential(self, user: str, mechanism: str, cred: ScramCredential) -> None:
        await self._store.put_scram_credential(user, mechanism, cred)
        self.credentials.put(user, mechanism, cred)

    async def delete_scram_credential(self, user: str, mechanism: str) -> None:
        await self._store.delete_scram_credential(user, mechanism)
        self.credentials.remove(user, mechanism)
