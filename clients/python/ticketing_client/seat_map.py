"""The seat map of ``GetSeatMap``/``WatchSeatMap``: ``ZoneSeatMap.seat_states`` decoded.

Both encodings list the seats row by row, seat by seat, each seat as a 2-bit code
(``FREE`` 0, ``HELD`` 1, ``SOLD`` 2):

- ``SEAT_STATES_ENCODING_PACKED``: two bits per seat, four seats per byte from the low bits,
  ``ceil(seats / 4)`` bytes;
- ``SEAT_STATES_ENCODING_RUNS``: runs of one state, each a protobuf varint of
  ``(run length - 1) << 2 | state``.

The server sends whichever is smaller, per zone. This is the same decoder as the Rust
reference (``ticketing_proto::seat_states::decode``): it accepts and refuses exactly what that
one does, which ``clients/seat_states_vectors.json`` checks for all three languages. The
encoding is compared with the generated enum's value names, so a renumbered enum needs only a
regeneration.
"""

from __future__ import annotations

from dataclasses import dataclass

from ticketing_client.ticketing.v1 import inventory_pb2

#: The 2-bit codes of a seat in ``seat_states`` (not the ``SeatState`` enum's numbers).
FREE, HELD, SOLD = 0, 1, 2
#: Names of the codes, for printing.
STATE_NAMES = ("free", "held", "sold")

#: The most seats a zone may have (an event has at most 200,000): a bound on what a hostile
#: message can make a reader allocate.
MAX_ZONE_SEATS = 200_000

_PACKED = inventory_pb2.SeatStatesEncoding.Value("SEAT_STATES_ENCODING_PACKED")
_RUNS = inventory_pb2.SeatStatesEncoding.Value("SEAT_STATES_ENCODING_RUNS")
#: The enum's zero, once the contract names it (None before): refused as the Rust reader does.
_UNSPECIFIED = dict(inventory_pb2.SeatStatesEncoding.items()).get("SEAT_STATES_ENCODING_UNSPECIFIED")


class SeatStatesError(ValueError):
    """``seat_states`` could not be decoded: the message was not written by inventory.

    ``kind`` names the cause as the Rust decoder's ``SeatStatesError`` variant does:
    ``TooManySeats``, ``UnspecifiedEncoding`` (once the enum has that zero), ``UnknownEncoding``,
    ``PackedLength``, ``BadState``, ``BadVarint`` or ``RunsLength``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def decode_seat_states(encoding: int, data: bytes, seats: int) -> bytes:
    """The 2-bit code of each of ``seats`` seats, one byte per seat, from ``data`` in
    ``encoding`` (a ``SeatStatesEncoding`` value). Raises ``SeatStatesError``."""
    if seats > MAX_ZONE_SEATS:
        raise SeatStatesError(
            "TooManySeats",
            f"a zone of {seats} seats is larger than the {MAX_ZONE_SEATS} any event may have",
        )
    if encoding == _PACKED:
        return _decode_packed(bytes(data), seats)
    if encoding == _RUNS:
        return _decode_runs(bytes(data), seats)
    if _UNSPECIFIED is not None and encoding == _UNSPECIFIED:
        raise SeatStatesError(
            "UnspecifiedEncoding",
            "seat_states_encoding is SEAT_STATES_ENCODING_UNSPECIFIED; "
            "the sender must name PACKED or RUNS",
        )
    raise SeatStatesError("UnknownEncoding", f"unknown seat_states_encoding {encoding}")


def _decode_packed(data: bytes, seats: int) -> bytes:
    expected = (seats + 3) // 4
    if len(data) != expected:
        raise SeatStatesError(
            "PackedLength",
            f"packed states of {seats} seats take {expected} bytes, got {len(data)}",
        )
    states = bytearray(seats)
    for seat in range(seats):
        code = (data[seat >> 2] >> ((seat & 3) * 2)) & 3
        if code == 3:
            raise SeatStatesError("BadState", f"seat {seat} has state 3, which is no SeatState")
        states[seat] = code
    return bytes(states)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The unsigned 64-bit varint at ``data[at:]`` and the offset after it; as protobuf, at
    most 10 bytes and no value beyond 64 bits."""
    value = 0
    for count in range(10):
        if at + count >= len(data):
            break
        byte = data[at + count]
        value |= (byte & 0x7F) << (7 * count)
        if byte < 0x80:
            if count == 9 and byte >= 2:
                break
            return value, at + count + 1
    raise SeatStatesError("BadVarint", f"a run at byte {at} is not a complete varint")


def _decode_runs(data: bytes, seats: int) -> bytes:
    states = bytearray()
    at = 0
    while at < len(data):
        run, after = _read_varint(data, at)
        code = run & 3
        if code == 3:
            raise SeatStatesError(
                "BadState", f"seat {len(states)} has state 3, which is no SeatState"
            )
        covered = len(states) + (run >> 2) + 1
        if covered > seats:
            raise SeatStatesError(
                "RunsLength", f"the runs cover {covered} seats, the zone has {seats}"
            )
        states.extend(bytes([code]) * (covered - len(states)))
        at = after
    if len(states) != seats:
        raise SeatStatesError(
            "RunsLength", f"the runs cover {len(states)} seats, the zone has {seats}"
        )
    return bytes(states)


@dataclass(frozen=True)
class ZoneStates:
    """One zone of a seat map, decoded."""

    zone_id: str
    row_labels: tuple[str, ...]
    seats_per_row: int
    #: One 2-bit code per seat, row by row (empty for general admission).
    states: bytes

    def index(self, seat_id: str) -> int:
        """Where seat ``<zone>-<row>-<number>`` is in ``states``; ``KeyError`` if the zone
        has no such seat."""
        zone, sep, rest = seat_id.partition("-")
        row, sep2, number = rest.rpartition("-")
        if zone != self.zone_id or not sep or not sep2 or not number.isdigit():
            raise KeyError(seat_id)
        if row not in self.row_labels or not 1 <= int(number) <= self.seats_per_row:
            raise KeyError(seat_id)
        return self.row_labels.index(row) * self.seats_per_row + int(number) - 1

    def state(self, seat_id: str) -> int:
        """The 2-bit code of one seat."""
        return self.states[self.index(seat_id)]

    def counts(self) -> dict[str, int]:
        """Seats free, held and sold."""
        return {name: self.states.count(code) for code, name in enumerate(STATE_NAMES)}


def decode_zone(zone: inventory_pb2.ZoneSeatMap) -> ZoneStates:
    """Decodes one ``ZoneSeatMap`` of a ``GetSeatMapResponse``."""
    seats = len(zone.row_labels) * zone.seats_per_row
    states = decode_seat_states(zone.seat_states_encoding, zone.seat_states, seats)
    return ZoneStates(zone.zone_id, tuple(zone.row_labels), zone.seats_per_row, states)
