"""ACLs with Kafka's model and StandardAuthorizer's semantics.

The enums carry Kafka's wire values, so bindings travel through CreateAcls/DescribeAcls/DeleteAcls
and the metadata store unchanged. The authorizer keeps bindings indexed by resource type and name
(the produce and fetch paths ask it once per partition) and remembers recent decisions until the
next ACL change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class ResourceType(IntEnum):
    UNKNOWN = 0
    ANY = 1  # filters only
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(IntEnum):
    UNKNOWN = 0
    ANY = 1  # filters only: any pattern type, names compared exactly
    MATCH = 2  # filters only: every binding that would apply to the named resource
    LITERAL = 3
    PREFIXED = 4


class AclOperation(IntEnum):
    UNKNOWN = 0
    ANY = 1  # filters only
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class AclPermission(IntEnum):
    UNKNOWN = 0
    ANY = 1  # filters only
    DENY = 2
    ALLOW = 3


CLUSTER_NAME = "kafka-cluster"
WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"

# An ALLOW of one of these also allows DESCRIBE (resp. DESCRIBE_CONFIGS); never for DENY.
_IMPLIES = {
    AclOperation.DESCRIBE: frozenset({AclOperation.READ, AclOperation.WRITE, AclOperation.DELETE,
                                      AclOperation.ALTER}),
    AclOperation.DESCRIBE_CONFIGS: frozenset({AclOperation.ALTER_CONFIGS}),
}

# What each resource type reports in `authorized_operations` bit fields (as Kafka does).
SUPPORTED_OPERATIONS: dict[ResourceType, tuple[AclOperation, ...]] = {
    ResourceType.TOPIC: (AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DELETE,
                         AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS,
                         AclOperation.ALTER_CONFIGS),
    ResourceType.GROUP: (AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE),
    ResourceType.CLUSTER: (AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS,
                           AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER,
                           AclOperation.DESCRIBE),
    ResourceType.TRANSACTIONAL_ID: (AclOperation.DESCRIBE, AclOperation.WRITE),
}


class AclError(ValueError):
    """A binding or filter that Kafka would refuse (INVALID_REQUEST on the wire)."""


@dataclass(frozen=True, slots=True)
class AclBinding:
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: AclOperation
    permission: AclPermission

    def as_row(self) -> tuple[int, str, int, str, str, int, int]:
        return (int(self.resource_type), self.resource_name, int(self.pattern_type), self.principal,
                self.host, int(self.operation), int(self.permission))

    @classmethod
    def from_row(cls, row: Iterable[Any]) -> AclBinding:
        """From a metadata-store row (SQLite gives ints and strs back as stored)."""
        rt, name, pt, principal, host, op, perm = row
        return cls(ResourceType(int(rt)), str(name), PatternType(int(pt)),
                   str(principal), str(host), AclOperation(int(op)), AclPermission(int(perm)))

    def validate(self) -> None:
        """Kafka's checks on a new binding (AclControlManager.validateNewAcl and friends)."""
        if self.resource_type in (ResourceType.UNKNOWN, ResourceType.ANY):
            raise AclError(f"Invalid resourceType {self.resource_type.name}")
        if self.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
            raise AclError(f"Invalid patternType {self.pattern_type.name}")
        if self.operation in (AclOperation.UNKNOWN, AclOperation.ANY):
            raise AclError(f"Invalid operation {self.operation.name}")
        if self.permission not in (AclPermission.ALLOW, AclPermission.DENY):
            raise AclError(f"Invalid permissionType {self.permission.name}")
        if not self.resource_name:
            raise AclError("Resource name should not be empty")
        if self.resource_type == ResourceType.CLUSTER and self.resource_name != CLUSTER_NAME:
            raise AclError(f"The only valid name for the CLUSTER resource is {CLUSTER_NAME}")
        if ":" not in self.principal:
            raise AclError(f"Could not parse principal from `{self.principal}` (no colon is present "
                           "separating the principal type from the principal name)")
        if not self.host:
            raise AclError("Host should not be empty")

    def describe(self) -> str:
        return (f"(principal={self.principal}, host={self.host}, operation={self.operation.name}, "
                f"permissionType={self.permission.name}) on {self.resource_type.name}:"
                f"{self.pattern_type.name}:{self.resource_name}")


@dataclass(frozen=True, slots=True)
class AclFilter:
    """DescribeAcls/DeleteAcls filter: None names/principals/hosts and ANY enums match anything."""

    resource_type: ResourceType = ResourceType.ANY
    resource_name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: AclOperation = AclOperation.ANY
    permission: AclPermission = AclPermission.ANY

    def validate(self) -> None:
        if self.resource_type == ResourceType.UNKNOWN or self.pattern_type == PatternType.UNKNOWN:
            raise AclError("Unknown patternFilter.")
        if self.operation == AclOperation.UNKNOWN or self.permission == AclPermission.UNKNOWN:
            raise AclError("Unknown entryFilter.")

    def matches(self, b: AclBinding) -> bool:
        return self._pattern_matches(b) and self._entry_matches(b)

    def _pattern_matches(self, b: AclBinding) -> bool:
        # Kafka's ResourcePatternFilter.matches.
        if self.resource_type != ResourceType.ANY and self.resource_type != b.resource_type:
            return False
        if self.pattern_type not in (PatternType.ANY, PatternType.MATCH) and self.pattern_type != b.pattern_type:
            return False
        if self.resource_name is None:
            return True
        if self.pattern_type in (PatternType.ANY, b.pattern_type):
            return self.resource_name == b.resource_name
        if b.pattern_type == PatternType.LITERAL:  # MATCH
            return self.resource_name == b.resource_name or b.resource_name == WILDCARD
        return self.resource_name.startswith(b.resource_name)

    def _entry_matches(self, b: AclBinding) -> bool:
        return ((self.principal is None or self.principal == b.principal)
                and (self.host is None or self.host == b.host)
                and (self.operation == AclOperation.ANY or self.operation == b.operation)
                and (self.permission == AclPermission.ANY or self.permission == b.permission))


# Called with (principal, host, operation, resource type, resource name) on every denial.
DenialHook = Callable[[str, str, AclOperation, ResourceType, str], None]


def parse_super_users(value: str) -> frozenset[str]:
    return frozenset(u.strip() for u in value.split(";") if u.strip())


class Authorizer:
    """StandardAuthorizer semantics over an in-memory index of bindings."""

    _CACHE_MAX = 50_000

    def __init__(self, *, enabled: bool, super_users: Iterable[str] = (), allow_if_no_acl: bool = False,
                 on_denied: DenialHook | None = None) -> None:
        self.enabled = enabled
        self.super_users = frozenset(super_users)
        self.allow_if_no_acl = allow_if_no_acl
        self.on_denied = on_denied
        self._all: set[AclBinding] = set()
        self._literal: dict[tuple[ResourceType, str], list[AclBinding]] = {}
        self._prefixed: dict[ResourceType, dict[str, list[AclBinding]]] = {}
        self._by_type: dict[ResourceType, int] = {}
        self._cache: dict[tuple[str, str, AclOperation, ResourceType, str], bool] = {}

    # -- bindings ----------------------------------------------------------------------------

    def bindings(self) -> list[AclBinding]:
        return sorted(self._all, key=AclBinding.as_row)

    def matching(self, f: AclFilter) -> list[AclBinding]:
        return [b for b in self.bindings() if f.matches(b)]

    def add(self, bindings: Iterable[AclBinding]) -> None:
        for b in bindings:
            if b in self._all:
                continue
            self._all.add(b)
            self._by_type[b.resource_type] = self._by_type.get(b.resource_type, 0) + 1
            if b.pattern_type == PatternType.PREFIXED:
                self._prefixed.setdefault(b.resource_type, {}).setdefault(b.resource_name, []).append(b)
            else:
                self._literal.setdefault((b.resource_type, b.resource_name), []).append(b)
        self._cache.clear()

    def remove(self, bindings: Iterable[AclBinding]) -> None:
        for b in bindings:
            if b not in self._all:
                continue
            self._all.discard(b)
            self._by_type[b.resource_type] -= 1
            if b.pattern_type == PatternType.PREFIXED:
                index = self._prefixed[b.resource_type]
                index[b.resource_name].remove(b)
                if not index[b.resource_name]:
                    del index[b.resource_name]
            else:
                key = (b.resource_type, b.resource_name)
                self._literal[key].remove(b)
                if not self._literal[key]:
                    del self._literal[key]
        self._cache.clear()

    # -- decisions ---------------------------------------------------------------------------

    def authorize(self, principal: str, host: str, op: AclOperation, rtype: ResourceType, name: str,
                  *, audit: bool = True) -> bool:
        """May `principal` from `host` do `op` on the resource? Denials are reported to
        `on_denied` unless `audit` is off (filtering, as Kafka's logIfDenied=false)."""
        if not self.enabled:
            return True
        key = (principal, host, op, rtype, name)
        allowed = self._cache.get(key)
        if allowed is None:
            allowed = self._decide(principal, host, op, rtype, name)
            if len(self._cache) >= self._CACHE_MAX:
                self._cache.clear()
            self._cache[key] = allowed
        if not allowed and audit and self.on_denied is not None:
            self.on_denied(principal, host, op, rtype, name)
        return allowed

    def _resource_acls(self, rtype: ResourceType, name: str) -> list[AclBinding]:
        found = list(self._literal.get((rtype, name), ()))
        if name != WILDCARD:
            found += self._literal.get((rtype, WILDCARD), ())
        prefixes = self._prefixed.get(rtype)
        if prefixes:
            if len(prefixes) < len(name):
                for prefix, acls in prefixes.items():
                    if name.startswith(prefix):
                        found += acls
            else:
                for i in range(1, len(name) + 1):
                    found += prefixes.get(name[:i], ())
        return found

    def _decide(self, principal: str, host: str, op: AclOperation, rtype: ResourceType, name: str) -> bool:
        if principal in self.super_users:
            return True
        acls = self._resource_acls(rtype, name)
        if not acls:
            return self.allow_if_no_acl
        implied_by = _IMPLIES.get(op, frozenset())
        allowed = False
        for acl in acls:
            if acl.principal not in (principal, WILDCARD_PRINCIPAL) or acl.host not in (host, WILDCARD):
                continue
            if acl.permission == AclPermission.DENY:
                if acl.operation in (op, AclOperation.ALL):
                    return False
            elif acl.operation in (op, AclOperation.ALL) or acl.operation in implied_by:
                allowed = True
        return allowed

    def authorize_any(self, principal: str, host: str, op: AclOperation, rtype: ResourceType) -> bool:
        """Is `op` allowed on at least one resource of this type? Kafka's authorizeByResourceType
        (InitProducerId: WRITE on any topic). Never audited: it is a fallback check."""
        if not self.enabled:
            return True
        # As Kafka: a made-up name covers super users and allow.everyone.if.no.acl.found.
        if self._decide(principal, host, op, rtype, "hardcode"):
            return True
        deny_literal: set[str] = set()
        deny_prefix: set[str] = set()
        allows: list[AclBinding] = []
        for b in self._all:
            if (b.resource_type != rtype or b.principal not in (principal, WILDCARD_PRINCIPAL)
                    or b.host not in (host, WILDCARD) or b.operation not in (op, AclOperation.ALL)):
                continue
            if b.permission == AclPermission.DENY:
                if b.pattern_type == PatternType.LITERAL and b.resource_name == WILDCARD:
                    return False
                (deny_literal if b.pattern_type == PatternType.LITERAL else deny_prefix).add(b.resource_name)
            else:
                allows.append(b)
        if any(b.pattern_type == PatternType.LITERAL and b.resource_name == WILDCARD for b in allows):
            return True
        for b in allows:
            if b.pattern_type == PatternType.LITERAL and b.resource_name in deny_literal:
                continue
            if not any(b.resource_name[:i] in deny_prefix for i in range(1, len(b.resource_name) + 1)):
                return True
        return False

    def authorized_operations(self, principal: str, host: str, rtype: ResourceType, name: str) -> int:
        """Kafka's `authorized_operations` bit field: bit `op` set for each allowed operation."""
        bits = 0
        for op in SUPPORTED_OPERATIONS[rtype]:
            if self.authorize(principal, host, op, rtype, name, audit=False):
                bits |= 1 << int(op)
        return bits
