"""DescribeCluster (key 60): this broker, the cluster id and the controller."""

from __future__ import annotations

from kio.schema.describe_cluster.v1.request import DescribeClusterRequest

from security.acl import CLUSTER_NAME
from service.errors import ErrorCode
from service.kafka.apis.authz import CLUSTER, authorized_ops
from service.kafka.context import RequestContext, Response

BROKERS_ENDPOINT = 1


async def handle(ctx: RequestContext, req: DescribeClusterRequest) -> Response:
    s, cluster = ctx.schema, ctx.cluster
    assert cluster is not None
    endpoint_type = int(getattr(req, "endpoint_type", BROKERS_ENDPOINT))
    if endpoint_type != BROKERS_ENDPOINT:
        return s.response(throttle_time=0, error_code=ErrorCode.unsupported_endpoint_type,
                          error_message="Only the brokers endpoint type is served.",
                          endpoint_type=endpoint_type, cluster_id=cluster.cluster_id,
                          controller_id=-1, brokers=(), cluster_authorized_operations=-(2**31))
    ep = cluster.endpoint_for(ctx.conn.listener_name)
    brokers = (s("DescribeClusterBroker", broker_id=cluster.node_id, host=ep.host, port=ep.port, rack=None),)
    return s.response(throttle_time=0, error_code=ErrorCode.none, error_message=None, endpoint_type=endpoint_type,
                      cluster_id=cluster.cluster_id, controller_id=cluster.node_id, brokers=brokers,
                      cluster_authorized_operations=authorized_ops(
                          ctx, bool(req.include_cluster_authorized_operations),
                          CLUSTER, CLUSTER_NAME))
