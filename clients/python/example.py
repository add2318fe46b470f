#!/usr/bin/env python3
"""One user's way to a hold, with the generated Python client, through the load balancer.

Joins the event's queue, waits for the pass (WatchQueue, or GetQueueStatus polls when the
replica has too many watchers), holds the best available seats of a seated zone with it, then
reads the seat map until the decoded map shows every held seat as held, prints a summary per
zone and releases the hold (unless --keep). Exits 0 when all of that worked, 1 on any failure
(the gRPC status is printed), 2 on bad arguments.

    TICKETING_TOKEN=$(cargo run -q --bin stack -- token --user alice) \
        python3 clients/python/example.py --event EVENT_ID

Settings come from flags or the environment: --target (TICKETING_TARGET, default
127.0.0.1:8080), --token (TICKETING_TOKEN), --event (TICKETING_EVENT_ID).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import grpc  # noqa: E402

from ticketing_client import bearer  # noqa: E402
from ticketing_client.seat_map import HELD, STATE_NAMES, SeatStatesError, decode_zone  # noqa: E402
from ticketing_client.ticketing.v1 import (  # noqa: E402
    admission_pb2,
    admission_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    seat_lock_pb2,
    seat_lock_pb2_grpc,
)

#: Longest one unary call may take, in seconds.
CALL_TIMEOUT = 10.0
SEATED = inventory_pb2.ZoneKind.Value("ZONE_KIND_SEATED")
ENCODING_NAMES = {
    value: name.removeprefix("SEAT_STATES_ENCODING_")
    for name, value in inventory_pb2.SeatStatesEncoding.items()
}


class Failed(Exception):
    """What went wrong, for the last line of output."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default=os.environ.get("TICKETING_TARGET", "127.0.0.1:8080"),
                        help="the load balancer, host:port (TICKETING_TARGET)")
    parser.add_argument("--token", default=os.environ.get("TICKETING_TOKEN"),
                        help="the user's bearer token (TICKETING_TOKEN)")
    parser.add_argument("--event", default=os.environ.get("TICKETING_EVENT_ID"),
                        help="the event id (TICKETING_EVENT_ID)")
    parser.add_argument("--zone", help="the seated zone to hold in (default: the first with "
                        "enough free seats)")
    parser.add_argument("--quantity", type=int, default=2, help="seats to hold (default 2)")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="longest wait for the pass and for the map to show the hold, s")
    parser.add_argument("--keep", action="store_true", help="keep the hold instead of releasing it")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("no token: --token or TICKETING_TOKEN (`stack token --user NAME`)")
    if not args.event:
        parser.error("no event: --event or TICKETING_EVENT_ID")
    if args.quantity < 1:
        parser.error("--quantity must be at least 1")
    return args


def pass_token(status) -> str:
    """The pass token of a QueueStatus, or "" (the field is named `pass`, a Python keyword)."""
    return getattr(status, "pass").token


def wait_for_pass(admission, event_id: str, auth, deadline: float) -> str:
    """Joins the queue and waits until admitted; answers the pass token."""
    status = admission.Join(admission_pb2.JoinRequest(event_id=event_id), metadata=auth,
                            timeout=CALL_TIMEOUT)
    print(f"joined: ticket {status.ticket}, "
          f"{admission_pb2.QueueState.Name(status.state)}, position {status.position}")
    if pass_token(status):
        return pass_token(status)
    try:
        stream = admission.WatchQueue(admission_pb2.WatchQueueRequest(event_id=event_id),
                                      metadata=auth, timeout=max(deadline - time.monotonic(), 1))
        position = None
        for status in stream:
            if pass_token(status):
                return pass_token(status)
            if status.position != position:
                position = status.position
                print(f"waiting: position {status.position} of {status.queue_length}, "
                      f"about {status.estimated_wait_seconds} s")
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise Failed("no pass before the deadline") from None
        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        print(f"WatchQueue refused ({error.details()}); polling GetQueueStatus")
    # The stream ended without a pass, or was refused: ask once a second.
    while time.monotonic() < deadline:
        status = admission.GetQueueStatus(
            admission_pb2.GetQueueStatusRequest(event_id=event_id), metadata=auth,
            timeout=CALL_TIMEOUT)
        if pass_token(status):
            return pass_token(status)
        time.sleep(1)
    raise Failed("no pass before the deadline")


def seat_map(inventory, event_id: str, auth, zone_id: str = ""):
    return inventory.GetSeatMap(inventory_pb2.GetSeatMapRequest(event_id=event_id, zone_id=zone_id),
                                metadata=auth, timeout=CALL_TIMEOUT)


def checked_zones(response):
    """Each zone decoded, its decoded counts checked against the server's counters."""
    zones = []
    for message in response.zones:
        zone = decode_zone(message)
        counts = zone.counts()
        if message.kind == SEATED and counts != {
            "free": message.free, "held": message.held, "sold": message.sold
        }:
            raise Failed(f"zone {message.zone_id}: decoded {counts}, the server counts "
                         f"free {message.free}, held {message.held}, sold {message.sold}")
        zones.append((message, zone))
    return zones


def run(args: argparse.Namespace) -> None:
    auth = bearer(args.token)
    started = time.monotonic()
    deadline = started + args.wait
    with grpc.insecure_channel(args.target) as channel:
        admission = admission_pb2_grpc.AdmissionServiceStub(channel)
        inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
        seat_lock = seat_lock_pb2_grpc.SeatLockServiceStub(channel)

        pass_token = wait_for_pass(admission, args.event, auth, deadline)
        print(f"admitted: got a pass after {time.monotonic() - started:.1f} s")

        before = seat_map(inventory, args.event, auth)
        candidates = [z for z in before.zones if z.kind == SEATED and z.free >= args.quantity
                      and (args.zone is None or z.zone_id == args.zone)]
        if not candidates:
            raise Failed(f"no seated zone{' ' + args.zone if args.zone else ''} has "
                         f"{args.quantity} free seats")
        zone_id = candidates[0].zone_id

        hold = seat_lock.HoldBestAvailable(
            seat_lock_pb2.HoldBestAvailableRequest(
                pass_token=pass_token, event_id=args.event, zone_id=zone_id,
                quantity=args.quantity, allow_split=True),
            metadata=auth, timeout=CALL_TIMEOUT)
        print(f"held: hold {hold.hold_id}, seats {', '.join(hold.seat_ids)}, "
              f"{hold.total_price_cents / 100:.2f} {hold.currency}")

        # The seat map follows the holds through the event stream: wait until it shows them.
        while True:
            response = seat_map(inventory, args.event, auth)
            zones = checked_zones(response)
            zone = next(z for m, z in zones if m.zone_id == zone_id)
            states = [zone.state(seat) for seat in hold.seat_ids]
            if all(state == HELD for state in states):
                break
            if time.monotonic() > deadline:
                shown = ", ".join(f"{s} {STATE_NAMES[c]}" for s, c in zip(hold.seat_ids, states))
                raise Failed(f"the seat map still shows {shown}")
            time.sleep(0.2)

        print(f"seat map version {response.version}:")
        for message, decoded in zones:
            counts = decoded.counts()
            if message.kind == SEATED:
                print(f"  zone {message.zone_id}: {counts['free']} free, {counts['held']} held, "
                      f"{counts['sold']} sold ({ENCODING_NAMES.get(message.seat_states_encoding)}, "
                      f"{len(message.seat_states)} bytes)")
            else:
                print(f"  zone {message.zone_id}: general admission, {message.free} free, "
                      f"{message.held} held, {message.sold} sold")
        print(f"OK: hold {hold.hold_id} of {len(hold.seat_ids)} seats "
              f"({', '.join(hold.seat_ids)}) is held in the decoded seat map")

        if not args.keep:
            seat_lock.ReleaseHold(
                seat_lock_pb2.ReleaseHoldRequest(event_id=args.event, hold_id=hold.hold_id),
                metadata=auth, timeout=CALL_TIMEOUT)
            print(f"released hold {hold.hold_id}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except grpc.RpcError as error:
        print(f"FAILED: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except (Failed, SeatStatesError) as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    except KeyError as error:
        print(f"FAILED: the seat map has no seat {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
