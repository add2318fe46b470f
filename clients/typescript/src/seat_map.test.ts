// The seat map decoder against the vectors the Rust encoder makes
// (clients/seat_states_vectors.json, checked against Rust by tools/tests/clients.rs), and the
// seat lookups the example relies on. Run with `npm test` (node's test runner).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { create } from "@bufbuild/protobuf";

import { SeatStatesEncoding, ZoneSeatMapSchema } from "./gen/ticketing/v1/inventory_pb.js";
import { HELD, SeatStatesError, decodeSeatStates, decodeZone } from "./seat_map.js";

interface Vector {
  name: string;
  seats: number;
  encoding: string | number;
  hex: string;
  states?: string;
  error?: string;
}

const vectors: { valid: Vector[]; invalid: Vector[] } = JSON.parse(
  readFileSync(new URL("../../seat_states_vectors.json", import.meta.url), "utf8"),
);

/** The vector's encoding as the generated enum's member (by name), or its raw number. */
function encodingOf(vector: Vector): number {
  if (typeof vector.encoding === "number") {
    return vector.encoding;
  }
  const value = SeatStatesEncoding[vector.encoding as keyof typeof SeatStatesEncoding];
  assert.equal(typeof value, "number", `no SeatStatesEncoding.${vector.encoding}`);
  return value;
}

const bytes = (hex: string) => Uint8Array.from(Buffer.from(hex, "hex"));

test("there are vectors of both encodings", () => {
  assert.deepEqual(new Set(vectors.valid.map((v) => v.encoding)), new Set(["PACKED", "RUNS"]));
  assert.ok(vectors.invalid.length >= 10);
});

test("valid vectors decode to their states", () => {
  for (const vector of vectors.valid) {
    const states = decodeSeatStates(encodingOf(vector), bytes(vector.hex), vector.seats);
    assert.deepEqual(Array.from(states), Array.from(vector.states ?? "", Number), vector.name);
  }
});

test("invalid vectors are refused with the Rust reason", () => {
  for (const vector of vectors.invalid) {
    assert.throws(
      () => decodeSeatStates(encodingOf(vector), bytes(vector.hex), vector.seats),
      (error: unknown) => error instanceof SeatStatesError && error.kind === vector.error,
      vector.name,
    );
  }
});

test("a zone decodes and finds its seats", () => {
  // Two rows of ten, seat B-1-4 (row "1", the second row) held, as one vector has it.
  const vector = vectors.valid.find((v) => v.name === "two rows of 10, one seat held");
  assert.ok(vector);
  const zone = decodeZone(
    create(ZoneSeatMapSchema, {
      zoneId: "B",
      rowLabels: ["2", "1"],
      seatsPerRow: 10,
      seatStates: bytes(vector.hex),
      seatStatesEncoding: encodingOf(vector),
    }),
  );
  assert.deepEqual(zone.counts(), { free: 19, held: 1, sold: 0 });
  assert.equal(zone.index("B-1-4"), 13);
  assert.equal(zone.state("B-1-4"), HELD);
  assert.equal(zone.state("B-2-4"), 0);
  for (const seat of ["A-1-4", "B-3-1", "B-1-0", "B-1-11", "B-1-x", "B-1-", "B1", ""]) {
    assert.equal(zone.index(seat), undefined, seat);
  }
});

test("a general-admission zone has no seats", () => {
  // As inventory sends it: packed, no bytes.
  const zone = decodeZone(
    create(ZoneSeatMapSchema, { zoneId: "FLOOR", seatStatesEncoding: SeatStatesEncoding.PACKED }),
  );
  assert.equal(zone.states.length, 0);
  assert.deepEqual(zone.counts(), { free: 0, held: 0, sold: 0 });
});

test("a zone too large is refused before decoding", () => {
  const message = create(ZoneSeatMapSchema, {
    zoneId: "A",
    rowLabels: Array(1000).fill("1"),
    seatsPerRow: 2 ** 32 - 1,
  });
  assert.throws(
    () => decodeZone(message),
    (error: unknown) => error instanceof SeatStatesError && error.kind === "TooManySeats",
  );
});
