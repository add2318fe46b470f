"""Python client of the flash-sale ticketing mesh.

- ``ticketing_client.ticketing.v1``: the generated messages (``*_pb2``) and gRPC stubs
  (``*_pb2_grpc``) of the public services, made by ``clients/generate`` from ``proto/``;
- ``ticketing_client.seat_map``: the decoder of ``ZoneSeatMap.seat_states``;
- ``bearer``: the metadata of a user-facing call.

Every user-facing RPC acts as the caller named by the bearer token; pass
``metadata=bearer(token)`` to each call (over plaintext to a loopback load balancer, as
the local stack serves, gRPC's call credentials would refuse the insecure channel).
"""

from __future__ import annotations


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """The ``authorization`` metadata of a call made as the owner of ``token``."""
    return (("authorization", f"Bearer {token}"),)
