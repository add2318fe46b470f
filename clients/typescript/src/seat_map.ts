/**
 * The seat map of `GetSeatMap`/`WatchSeatMap`: `ZoneSeatMap.seatStates` decoded.
 *
 * Both encodings list the seats row by row, seat by seat, each seat as a 2-bit code
 * (`FREE` 0, `HELD` 1, `SOLD` 2):
 * - `SeatStatesEncoding.PACKED`: two bits per seat, four seats per byte from the low bits,
 *   `ceil(seats / 4)` bytes;
 * - `SeatStatesEncoding.RUNS`: runs of one state, each a protobuf varint of
 *   `(run length - 1) << 2 | state`.
 *
 * The server sends whichever is smaller, per zone. This is the same decoder as the Rust
 * reference (`ticketing_proto::seat_states::decode`): it accepts and refuses exactly what that
 * one does, which `clients/seat_states_vectors.json` checks for all three languages. The
 * encoding is compared with the generated enum's members, so a renumbered enum needs only a
 * regeneration.
 */

import { SeatStatesEncoding, type ZoneSeatMap } from "./gen/ticketing/v1/inventory_pb.js";

/** The 2-bit codes of a seat in `seatStates` (not the `SeatState` enum's numbers). */
export const FREE = 0;
export const HELD = 1;
export const SOLD = 2;
/** Names of the codes, by code, for printing. */
export const STATE_NAMES = ["free", "held", "sold"] as const;

/**
 * The most seats a zone may have (an event has at most 200,000): a bound on what a hostile
 * message can make a reader allocate.
 */
export const MAX_ZONE_SEATS = 200_000;

/** The enum's zero, once the contract names it (undefined before): refused as the Rust reader does. */
const UNSPECIFIED: number | undefined = (SeatStatesEncoding as unknown as Record<string, number | undefined>)[
  "UNSPECIFIED"
];

/** Why `seatStates` could not be decoded, named as the Rust decoder's `SeatStatesError`. */
export type SeatStatesErrorKind =
  | "TooManySeats"
  | "UnspecifiedEncoding"
  | "UnknownEncoding"
  | "PackedLength"
  | "BadState"
  | "BadVarint"
  | "RunsLength";

/** `seatStates` could not be decoded: the message was not written by inventory. */
export class SeatStatesError extends Error {
  constructor(
    readonly kind: SeatStatesErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "SeatStatesError";
  }
}

/**
 * The 2-bit code of each of `seats` seats, one byte per seat, from `data` in `encoding` (a
 * `SeatStatesEncoding` value). Throws `SeatStatesError`.
 */
export function decodeSeatStates(encoding: number, data: Uint8Array, seats: number): Uint8Array {
  if (seats > MAX_ZONE_SEATS) {
    throw new SeatStatesError(
      "TooManySeats",
      `a zone of ${seats} seats is larger than the ${MAX_ZONE_SEATS} any event may have`,
    );
  }
  switch (encoding) {
    case SeatStatesEncoding.PACKED:
      return decodePacked(data, seats);
    case SeatStatesEncoding.RUNS:
      return decodeRuns(data, seats);
    default:
      if (encoding === UNSPECIFIED) {
        throw new SeatStatesError(
          "UnspecifiedEncoding",
          "seat_states_encoding is SEAT_STATES_ENCODING_UNSPECIFIED; the sender must name PACKED or RUNS",
        );
      }
      throw new SeatStatesError("UnknownEncoding", `unknown seat_states_encoding ${encoding}`);
  }
}

function badState(seat: number): SeatStatesError {
  return new SeatStatesError("BadState", `seat ${seat} has state 3, which is no SeatState`);
}

function decodePacked(data: Uint8Array, seats: number): Uint8Array {
  const expected = Math.ceil(seats / 4);
  if (data.length !== expected) {
    throw new SeatStatesError(
      "PackedLength",
      `packed states of ${seats} seats take ${expected} bytes, got ${data.length}`,
    );
  }
  const states = new Uint8Array(seats);
  for (let seat = 0; seat < seats; seat++) {
    const code = (data[seat >> 2] >> ((seat & 3) * 2)) & 3;
    if (code === 3) {
      throw badState(seat);
    }
    states[seat] = code;
  }
  return states;
}

/**
 * The unsigned 64-bit varint at `data[at]` and the offset after it; as protobuf, at most 10
 * bytes and no value beyond 64 bits. The value is a float: exact below 2^53, and above that
 * far beyond any zone, which is all a run length is compared with.
 */
function readVarint(data: Uint8Array, at: number): [number, number] {
  let value = 0;
  for (let count = 0; count < 10 && at + count < data.length; count++) {
    const byte = data[at + count];
    value += (byte & 0x7f) * 2 ** (7 * count);
    if (byte < 0x80) {
      if (count === 9 && byte >= 2) {
        break;
      }
      return [value, at + count + 1];
    }
  }
  throw new SeatStatesError("BadVarint", `a run at byte ${at} is not a complete varint`);
}

function decodeRuns(data: Uint8Array, seats: number): Uint8Array {
  const states = new Uint8Array(seats);
  let filled = 0;
  let at = 0;
  while (at < data.length) {
    const [run, after] = readVarint(data, at);
    // The state is the low two bits, all in the first byte, exact whatever the value's size.
    const code = data[at] & 3;
    if (code === 3) {
      throw badState(filled);
    }
    const covered = filled + Math.floor(run / 4) + 1;
    if (covered > seats) {
      throw new SeatStatesError("RunsLength", `the runs cover ${covered} seats, the zone has ${seats}`);
    }
    states.fill(code, filled, covered);
    filled = covered;
    at = after;
  }
  if (filled !== seats) {
    throw new SeatStatesError("RunsLength", `the runs cover ${filled} seats, the zone has ${seats}`);
  }
  return states;
}

/** One zone of a seat map, decoded. */
export class ZoneStates {
  constructor(
    readonly zoneId: string,
    readonly rowLabels: readonly string[],
    readonly seatsPerRow: number,
    /** One 2-bit code per seat, row by row (empty for general admission). */
    readonly states: Uint8Array,
  ) {}

  /** Where seat `<zone>-<row>-<number>` is in `states`; `undefined` if the zone has no such seat. */
  index(seatId: string): number | undefined {
    const dash = seatId.indexOf("-");
    const last = seatId.lastIndexOf("-");
    if (dash < 0 || last <= dash || seatId.slice(0, dash) !== this.zoneId) {
      return undefined;
    }
    const row = this.rowLabels.indexOf(seatId.slice(dash + 1, last));
    const numberText = seatId.slice(last + 1);
    const number = Number(numberText);
    if (row < 0 || !/^[0-9]+$/.test(numberText) || number < 1 || number > this.seatsPerRow) {
      return undefined;
    }
    return row * this.seatsPerRow + number - 1;
  }

  /** The 2-bit code of one seat, or `undefined` if the zone has no such seat. */
  state(seatId: string): number | undefined {
    const index = this.index(seatId);
    return index === undefined ? undefined : this.states[index];
  }

  /** Seats free, held and sold. */
  counts(): { free: number; held: number; sold: number } {
    const counts = [0, 0, 0];
    for (const code of this.states) {
      counts[code]++;
    }
    return { free: counts[FREE], held: counts[HELD], sold: counts[SOLD] };
  }
}

/** Decodes one `ZoneSeatMap` of a `GetSeatMapResponse`. */
export function decodeZone(zone: ZoneSeatMap): ZoneStates {
  const seats = zone.rowLabels.length * zone.seatsPerRow;
  const states = decodeSeatStates(zone.seatStatesEncoding, zone.seatStates, seats);
  return new ZoneStates(zone.zoneId, zone.rowLabels, zone.seatsPerRow, states);
}
