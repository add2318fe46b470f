"""The seat map decoder against the vectors the Rust encoder makes
(clients/seat_states_vectors.json, checked against Rust by tools/tests/clients.rs), and the
seat lookups the example relies on."""

import json
import pathlib
import unittest

from ticketing_client.seat_map import (
    HELD,
    SeatStatesError,
    decode_seat_states,
    decode_zone,
)
from ticketing_client.ticketing.v1 import inventory_pb2

VECTORS = json.loads(
    (pathlib.Path(__file__).resolve().parents[2] / "seat_states_vectors.json").read_text()
)


def encoding_of(vector):
    """The vector's encoding as the generated enum's value (by name), or its raw number."""
    encoding = vector["encoding"]
    if isinstance(encoding, int):
        return encoding
    return inventory_pb2.SeatStatesEncoding.Value("SEAT_STATES_ENCODING_" + encoding)


class Vectors(unittest.TestCase):
    def test_there_are_vectors_of_both_encodings(self):
        encodings = {v["encoding"] for v in VECTORS["valid"]}
        self.assertEqual(encodings, {"PACKED", "RUNS"})
        self.assertGreaterEqual(len(VECTORS["invalid"]), 10)

    def test_valid_vectors_decode_to_their_states(self):
        for vector in VECTORS["valid"]:
            with self.subTest(vector["name"]):
                states = decode_seat_states(
                    encoding_of(vector), bytes.fromhex(vector["hex"]), vector["seats"]
                )
                self.assertEqual(states, bytes(int(c) for c in vector["states"]))

    def test_invalid_vectors_are_refused_with_the_rust_reason(self):
        for vector in VECTORS["invalid"]:
            with self.subTest(vector["name"]):
                with self.assertRaises(SeatStatesError) as refused:
                    decode_seat_states(
                        encoding_of(vector), bytes.fromhex(vector["hex"]), vector["seats"]
                    )
                self.assertEqual(refused.exception.kind, vector["error"])


class Zones(unittest.TestCase):
    def zone(self):
        # Two rows of ten, seat B-1-4 (row "1", the second row) held, as one vector has it.
        vector = next(v for v in VECTORS["valid"] if v["name"] == "two rows of 10, one seat held")
        return inventory_pb2.ZoneSeatMap(
            zone_id="B",
            row_labels=["2", "1"],
            seats_per_row=10,
            seat_states=bytes.fromhex(vector["hex"]),
            seat_states_encoding=encoding_of(vector),
        )

    def test_a_zone_decodes_and_finds_its_seats(self):
        zone = decode_zone(self.zone())
        self.assertEqual(zone.counts(), {"free": 19, "held": 1, "sold": 0})
        self.assertEqual(zone.index("B-1-4"), 13)
        self.assertEqual(zone.state("B-1-4"), HELD)
        self.assertEqual(zone.state("B-2-4"), 0)
        for seat in ["A-1-4", "B-3-1", "B-1-0", "B-1-11", "B-1-x", "B1", ""]:
            with self.assertRaises(KeyError, msg=seat):
                zone.index(seat)

    def test_a_general_admission_zone_has_no_seats(self):
        # As inventory sends it: packed, no bytes.
        packed = inventory_pb2.SeatStatesEncoding.Value("SEAT_STATES_ENCODING_PACKED")
        zone = decode_zone(
            inventory_pb2.ZoneSeatMap(zone_id="FLOOR", seat_states_encoding=packed)
        )
        self.assertEqual(zone.states, b"")
        self.assertEqual(zone.counts(), {"free": 0, "held": 0, "sold": 0})

    def test_a_zone_too_large_is_refused_before_decoding(self):
        message = inventory_pb2.ZoneSeatMap(
            zone_id="A", row_labels=["1"] * 1000, seats_per_row=2**32 - 1
        )
        with self.assertRaises(SeatStatesError) as refused:
            decode_zone(message)
        self.assertEqual(refused.exception.kind, "TooManySeats")


if __name__ == "__main__":
    unittest.main()
