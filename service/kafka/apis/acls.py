"""Shared by CreateAcls, DescribeAcls and DeleteAcls: wire fields to bindings and filters."""

from __future__ import annotations

from enum import IntEnum
from typing import TypeVar

from kio.schema.create_acls.v3.request import AclCreation
from kio.schema.delete_acls.v3.request import DeleteAclsFilter
from kio.schema.describe_acls.v3.request import DescribeAclsRequest

from security.acl import AclBinding, AclFilter, AclOperation, AclPermission, PatternType, ResourceType

E = TypeVar("E", bound=IntEnum)


def _enum(cls: type[E], value: int) -> E:
    """Out-of-range wire values are UNKNOWN (0), as Kafka reads them."""
    try:
        return cls(int(value))
    except ValueError:
        return cls(0)


def binding_of(c: AclCreation) -> AclBinding:
    return AclBinding(_enum(ResourceType, c.resource_type), c.resource_name,
                      _enum(PatternType, c.resource_pattern_type), c.principal, c.host,
                      _enum(AclOperation, c.operation), _enum(AclPermission, c.permission_type))


def filter_of(f: DescribeAclsRequest | DeleteAclsFilter) -> AclFilter:
    """DescribeAcls carries its one filter in the request itself, DeleteAcls a list of them."""
    return AclFilter(_enum(ResourceType, f.resource_type_filter), f.resource_name_filter,
                     _enum(PatternType, f.pattern_type_filter), f.principal_filter, f.host_filter,
                     _enum(AclOperation, f.operation), _enum(AclPermission, f.permission_type))
