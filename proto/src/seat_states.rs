//! The encodings of `ZoneSeatMap.seat_states`, the encoder inventory uses and the one
//! decoder every reader uses.
//!
//! Both encodings list the seats row by row, seat by seat, each as a 2-bit [`SeatCode`]
//! (0 free, 1 held, 2 sold: the table in `inventory.proto`; a free zone is all zero bytes),
//! which is not the number of its [`SeatState`] (whose 0 is `SEAT_STATE_UNSPECIFIED`):
//! - [`SeatStatesEncoding::Packed`]: two bits per seat, four seats per byte from the low
//!   bits, `ceil(seats / 4)` bytes whatever the map.
//! - [`SeatStatesEncoding::Runs`]: runs of seats in one state, each a protobuf varint of
//!   `(run length - 1) << 2 | code`. A run of up to 32 seats takes one byte; a zone sold from
//!   the best seats down is a few long runs.
//!
//! [`SeatStatesEncoding::Unspecified`] is refused: the server always names its encoding.
//!
//! [`encode`] answers whichever is smaller, so a map never costs more than the packed form. A
//! map whose states are scattered at random has runs about 1.5 seats long and stays packed, at
//! 2 bits per seat.

use prost::bytes::Bytes;

use crate::v1::{SeatState, SeatStatesEncoding, ZoneSeatMap};

/// The most seats a decoder accepts in one zone: an event has at most 200,000 seats, and the
/// bound keeps a hostile message from making a reader allocate without limit.
pub const MAX_ZONE_SEATS: usize = 200_000;

/// The 2-bit code of a seat in both encodings of `seat_states`, and in inventory's packed
/// map. Distinct from [`SeatState`], whose numbers start with `UNSPECIFIED = 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SeatCode {
    /// Code 0: free (so a free zone's packed form is all zero bytes).
    Free = 0,
    /// Code 1: held.
    Held = 1,
    /// Code 2: sold.
    Sold = 2,
}

impl SeatCode {
    /// The code's two bits.
    pub const fn bits(self) -> u8 {
        self as u8
    }

    /// The code of two bits (the low two of `bits`), or `None` for 3, which is no seat.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        match bits & 0b11 {
            0 => Some(Self::Free),
            1 => Some(Self::Held),
            2 => Some(Self::Sold),
            _ => None,
        }
    }

    /// The seat's [`SeatState`], as `SeatChange.state` and [`decode`] give it.
    pub const fn state(self) -> SeatState {
        match self {
            Self::Free => SeatState::Free,
            Self::Held => SeatState::Held,
            Self::Sold => SeatState::Sold,
        }
    }

    /// The code of `state`, or `None` for [`SeatState::Unspecified`], which no seat has.
    pub const fn of_state(state: SeatState) -> Option<Self> {
        match state {
            SeatState::Free => Some(Self::Free),
            SeatState::Held => Some(Self::Held),
            SeatState::Sold => Some(Self::Sold),
            SeatState::Unspecified => None,
        }
    }
}

impl From<SeatCode> for SeatState {
    fn from(code: SeatCode) -> Self {
        code.state()
    }
}

/// Why `seat_states` could not be decoded. The message was not written by inventory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeatStatesError {
    /// `row_labels` × `seats_per_row` is beyond [`MAX_ZONE_SEATS`].
    #[error("a zone of {0} seats is larger than the {MAX_ZONE_SEATS} any event may have")]
    TooManySeats(u64),
    /// `seat_states_encoding` is `SEAT_STATES_ENCODING_UNSPECIFIED` (0): the sender did not
    /// say how it encoded the states.
    #[error("seat_states_encoding is SEAT_STATES_ENCODING_UNSPECIFIED; the sender must name PACKED or RUNS")]
    UnspecifiedEncoding,
    /// `seat_states_encoding` is not a [`SeatStatesEncoding`] this reader knows.
    #[error("unknown seat_states_encoding {0}")]
    UnknownEncoding(i32),
    /// The packed form has the wrong length for the zone.
    #[error("packed states of {seats} seats take {expected} bytes, got {got}")]
    PackedLength {
        /// Seats of the zone.
        seats: usize,
        /// `ceil(seats / 4)`.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// A seat has the code 3, which is no [`SeatCode`].
    #[error("seat {0} has code 3, which is no seat code")]
    BadState(usize),
    /// The runs end inside a varint, or a varint is longer than 10 bytes.
    #[error("a run at byte {0} is not a complete varint")]
    BadVarint(usize),
    /// The runs cover more or fewer seats than the zone has.
    #[error("the runs cover {covered} seats, the zone has {seats}")]
    RunsLength {
        /// Seats the runs cover, up to the first one that overflows the zone.
        covered: u64,
        /// Seats of the zone.
        seats: usize,
    },
}

/// `seat_states` and its `seat_states_encoding`, ready to go into a [`ZoneSeatMap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedSeatStates {
    /// The form `bytes` is in.
    pub encoding: SeatStatesEncoding,
    /// The encoded states.
    pub bytes: Bytes,
}

/// Encodes `seats` seats held in the packed form (`packed`, a [`SeatCode`] in each two bits) as the smaller of
/// the packed form and runs. Seats beyond `packed` count as free.
pub fn encode(packed: &[u8], seats: usize) -> EncodedSeatStates {
    let packed_len = seats.div_ceil(4);
    match runs(packed, seats, packed_len) {
        Some(runs) => EncodedSeatStates { encoding: SeatStatesEncoding::Runs, bytes: runs.into() },
        None => {
            let mut bytes = packed.get(..packed_len).unwrap_or(packed).to_vec();
            bytes.resize(packed_len, 0);
            if let (Some(last), rest @ 1..=3) = (bytes.last_mut(), seats % 4) {
                // Bits past the last seat are zero, whatever the caller's buffer holds.
                *last &= (1u8 << (rest * 2)) - 1;
            }
            EncodedSeatStates { encoding: SeatStatesEncoding::Packed, bytes: bytes.into() }
        }
    }
}

/// The run-length form of `seats` packed seats, or `None` as soon as it would take
/// `limit` bytes or more.
fn runs(packed: &[u8], seats: usize, limit: usize) -> Option<Vec<u8>> {
    /// A byte of four seats in state `s`, by `s`.
    const UNIFORM: [u8; 4] = [0x00, 0x55, 0xAA, 0xFF];
    let mut out = Vec::new();
    let (mut state, mut length) = (packed.first().map_or(0, |b| b & 0b11), 0u64);
    let mut seat = 0;
    while seat < seats {
        let byte = packed.get(seat / 4).copied().unwrap_or(0);
        if seat % 4 == 0 && seats - seat >= 4 && byte == UNIFORM[usize::from(state)] {
            length += 4;
            seat += 4;
            continue;
        }
        let next = (byte >> ((seat % 4) * 2)) & 0b11;
        if next != state {
            push_run(&mut out, state, length);
            if out.len() >= limit {
                return None;
            }
            (state, length) = (next, 0);
        }
        length += 1;
        seat += 1;
    }
    if length > 0 {
        push_run(&mut out, state, length);
    }
    (out.len() < limit).then_some(out)
}

fn push_run(out: &mut Vec<u8>, state: u8, length: u64) {
    prost::encoding::encode_varint(((length - 1) << 2) | u64::from(state), out);
}

/// The state of each of `seats` seats, from `bytes` in `encoding` (a `SeatStatesEncoding`
/// value as it travels).
pub fn decode(encoding: i32, bytes: &[u8], seats: usize) -> Result<Vec<SeatState>, SeatStatesError> {
    if seats > MAX_ZONE_SEATS {
        return Err(SeatStatesError::TooManySeats(seats as u64));
    }
    match SeatStatesEncoding::try_from(encoding) {
        Ok(SeatStatesEncoding::Packed) => decode_packed(bytes, seats),
        Ok(SeatStatesEncoding::Runs) => decode_runs(bytes, seats),
        Ok(SeatStatesEncoding::Unspecified) => Err(SeatStatesError::UnspecifiedEncoding),
        Err(_) => Err(SeatStatesError::UnknownEncoding(encoding)),
    }
}

fn state_of(bits: u8, seat: usize) -> Result<SeatState, SeatStatesError> {
    SeatCode::from_bits(bits).map(SeatCode::state).ok_or(SeatStatesError::BadState(seat))
}

fn decode_packed(bytes: &[u8], seats: usize) -> Result<Vec<SeatState>, SeatStatesError> {
    let expected = seats.div_ceil(4);
    if bytes.len() != expected {
        return Err(SeatStatesError::PackedLength { seats, expected, got: bytes.len() });
    }
    (0..seats).map(|seat| state_of((bytes[seat / 4] >> ((seat % 4) * 2)) & 0b11, seat)).collect()
}

fn decode_runs(bytes: &[u8], seats: usize) -> Result<Vec<SeatState>, SeatStatesError> {
    let mut states = Vec::with_capacity(seats);
    let mut rest = bytes;
    while !rest.is_empty() {
        let at = bytes.len() - rest.len();
        let run = prost::encoding::decode_varint(&mut rest).map_err(|_| SeatStatesError::BadVarint(at))?;
        let state = state_of((run & 0b11) as u8, states.len())?;
        let covered = states.len() as u64 + (run >> 2) + 1;
        if covered > seats as u64 {
            return Err(SeatStatesError::RunsLength { covered, seats });
        }
        states.resize(covered as usize, state);
    }
    if states.len() != seats {
        return Err(SeatStatesError::RunsLength { covered: states.len() as u64, seats });
    }
    Ok(states)
}

impl ZoneSeatMap {
    /// The state of every seat of the zone, row by row, seat by seat (none for a
    /// general-admission zone), whichever encoding the server chose.
    pub fn decode_seat_states(&self) -> Result<Vec<SeatState>, SeatStatesError> {
        let seats = self.row_labels.len() as u64 * u64::from(self.seats_per_row);
        let seats = usize::try_from(seats)
            .ok()
            .filter(|&s| s <= MAX_ZONE_SEATS)
            .ok_or(SeatStatesError::TooManySeats(seats))?;
        decode(self.seat_states_encoding, &self.seat_states, seats)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    fn pack(states: &[SeatState]) -> Vec<u8> {
        let mut packed = vec![0; states.len().div_ceil(4)];
        for (seat, &state) in states.iter().enumerate() {
            packed[seat / 4] |= SeatCode::of_state(state).unwrap().bits() << ((seat % 4) * 2);
        }
        packed
    }

    fn round_trip(states: &[SeatState]) -> EncodedSeatStates {
        let packed = pack(states);
        let encoded = encode(&packed, states.len());
        assert!(encoded.bytes.len() <= packed.len(), "never larger than packed");
        let decoded = decode(encoded.encoding as i32, &encoded.bytes, states.len()).unwrap();
        assert_eq!(decoded, states, "{:?}", encoded.encoding);
        // The packed form always decodes too.
        assert_eq!(decode(SeatStatesEncoding::Packed as i32, &packed, states.len()).unwrap(), states);
        encoded
    }

    const STATES: [SeatState; 3] = [SeatState::Free, SeatState::Held, SeatState::Sold];

    /// 50,000 seats: 100 rows of 500, as the bench's and the simulator's zone.
    const SEATS: usize = 50_000;

    #[test]
    fn small_and_edge_maps_round_trip() {
        round_trip(&[]);
        for len in 1..=9 {
            for state in STATES {
                round_trip(&vec![state; len]);
            }
        }
        round_trip(&[SeatState::Held, SeatState::Free, SeatState::Sold, SeatState::Sold, SeatState::Free]);
        let free = round_trip(&[SeatState::Free; SEATS]);
        assert_eq!((free.encoding, free.bytes.len()), (SeatStatesEncoding::Runs, 3));
    }

    #[test]
    fn random_maps_round_trip_and_stay_packed() {
        let mut rng = StdRng::seed_from_u64(6);
        for _ in 0..200 {
            let len = rng.random_range(0..2_000);
            let states: Vec<_> = (0..len).map(|_| STATES[rng.random_range(0..3)]).collect();
            round_trip(&states);
        }
        let states: Vec<_> = (0..SEATS).map(|_| STATES[rng.random_range(0..3)]).collect();
        let random = round_trip(&states);
        assert_eq!((random.encoding, random.bytes.len()), (SeatStatesEncoding::Packed, SEATS / 4));
    }

    #[test]
    fn clustered_maps_round_trip_and_shrink() {
        let mut rng = StdRng::seed_from_u64(7);
        let (mut packed_total, mut encoded_total) = (0, 0);
        for _ in 0..200 {
            let len = rng.random_range(1..5_000);
            let mut states = Vec::with_capacity(len);
            let mut generated_runs = 0;
            while states.len() < len {
                let run = rng.random_range(1..300).min(len - states.len());
                states.extend(std::iter::repeat_n(STATES[rng.random_range(0..3)], run));
                generated_runs += 1;
            }
            let encoded = round_trip(&states);
            // A run shorter than 300 seats is one varint of at most two bytes (neighbouring
            // runs of one state merge), so a map of long runs is far below its packed size.
            let packed_len = len.div_ceil(4);
            if 2 * generated_runs < packed_len {
                assert_eq!(encoded.encoding, SeatStatesEncoding::Runs, "{len} seats, {generated_runs} runs");
                assert!(encoded.bytes.len() <= 2 * generated_runs, "{} bytes", encoded.bytes.len());
            }
            packed_total += packed_len;
            encoded_total += encoded.bytes.len();
        }
        // Runs of 150 seats on average: about 38 packed bytes each against at most 2.
        assert!(encoded_total * 10 < packed_total, "{encoded_total} bytes encoded, {packed_total} packed");
    }

    #[test]
    fn a_best_available_sale_half_way_is_a_few_hundred_bytes() {
        // Best available fills rows front to back in blocks of 1-4; the blocks at the edge of
        // the sold area are still held, and a few holds there expired back to free.
        let mut rng = StdRng::seed_from_u64(8);
        let mut states = vec![SeatState::Free; SEATS];
        let (mut seat, half) = (0, SEATS / 2);
        while seat < half {
            let block = rng.random_range(1..=4).min(half - seat);
            let state = match (half - seat < 2_000, rng.random_range(0..10)) {
                (true, 0..=4) => SeatState::Held,
                (true, 5) => SeatState::Free,
                _ => SeatState::Sold,
            };
            states[seat..seat + block].fill(state);
            seat += block;
        }
        let encoded = round_trip(&states);
        assert_eq!(encoded.encoding, SeatStatesEncoding::Runs);
        assert!(encoded.bytes.len() < 1_000, "{} bytes", encoded.bytes.len());
    }

    #[test]
    fn padding_bits_are_cleared_when_packed() {
        let states = [SeatState::Held, SeatState::Sold, SeatState::Held, SeatState::Free, SeatState::Sold];
        let mut packed = pack(&states);
        packed[1] |= 0b1111_1100;
        let encoded = encode(&packed, states.len());
        assert_eq!(decode(encoded.encoding as i32, &encoded.bytes, states.len()).unwrap(), states);
        assert_eq!(encoded.bytes.last(), Some(&0b10));
    }

    #[test]
    fn bad_input_is_refused_without_panicking() {
        use SeatStatesError::*;
        let packed = SeatStatesEncoding::Packed as i32;
        let runs = SeatStatesEncoding::Runs as i32;
        assert_eq!(decode(packed, &[0; 3], 9), Ok(vec![SeatState::Free; 9]));
        assert_eq!(decode(packed, &[0; 2], 9), Err(PackedLength { seats: 9, expected: 3, got: 2 }));
        assert_eq!(decode(packed, &[0b11_00], 4), Err(BadState(1)));
        assert_eq!(decode(7, &[], 0), Err(UnknownEncoding(7)));
        assert_eq!(decode(-1, &[], 0), Err(UnknownEncoding(-1)));
        assert_eq!(decode(SeatStatesEncoding::Unspecified as i32, &[], 0), Err(UnspecifiedEncoding));
        assert_eq!(decode(0, &[0; 3], 9), Err(UnspecifiedEncoding));
        assert_eq!(decode(packed, &[], MAX_ZONE_SEATS + 1), Err(TooManySeats(MAX_ZONE_SEATS as u64 + 1)));
        // Runs: too few, too many, state 3, a cut varint, an endless varint, a huge run.
        assert_eq!(decode(runs, &[(3 << 2) | 1], 5), Err(RunsLength { covered: 4, seats: 5 }));
        assert_eq!(decode(runs, &[(3 << 2) | 1, 0], 4), Err(RunsLength { covered: 5, seats: 4 }));
        assert_eq!(decode(runs, &[0, 3], 2), Err(BadState(1)));
        assert_eq!(decode(runs, &[0, 0x80], 2), Err(BadVarint(1)));
        assert_eq!(decode(runs, &[0xFF; 11], 2), Err(BadVarint(0)));
        let mut huge = Vec::new();
        prost::encoding::encode_varint(u64::MAX, &mut huge);
        assert!(matches!(decode(runs, &huge, 10), Err(BadState(0) | RunsLength { .. })));
        prost::encoding::encode_varint(!0b11, &mut huge);
        assert!(matches!(decode(runs, &huge[10..], 10), Err(RunsLength { .. })));
        assert_eq!(decode(runs, &[], 1), Err(RunsLength { covered: 0, seats: 1 }));
        assert_eq!(decode(runs, &[], 0), Ok(vec![]));

        let zone = ZoneSeatMap {
            row_labels: vec!["1".into(); 1_000],
            seats_per_row: u32::MAX,
            seat_states: Bytes::from_static(&[0]),
            seat_states_encoding: SeatStatesEncoding::Packed as i32,
            ..ZoneSeatMap::default()
        };
        assert_eq!(zone.decode_seat_states(), Err(TooManySeats(1_000 * u64::from(u32::MAX))));
        let zone = ZoneSeatMap { row_labels: vec!["1".into(); 2], seats_per_row: 3, ..zone };
        assert_eq!(zone.decode_seat_states(), Err(PackedLength { seats: 6, expected: 2, got: 1 }));
        // A map that does not name its encoding is refused, even when its bytes would fit.
        let unnamed =
            ZoneSeatMap { seat_states: Bytes::from_static(&[0, 0]), seat_states_encoding: 0, ..zone };
        assert_eq!(unnamed.decode_seat_states(), Err(UnspecifiedEncoding));
    }

    #[test]
    fn seat_codes_are_the_documented_table_not_seat_state_numbers() {
        // The table in inventory.proto: 0 free, 1 held, 2 sold, 3 no seat.
        let table = [(0, SeatState::Free), (1, SeatState::Held), (2, SeatState::Sold)];
        for (bits, state) in table {
            let code = SeatCode::from_bits(bits).unwrap();
            assert_eq!((code.bits(), code.state(), SeatState::from(code)), (bits, state, state));
            assert_eq!(SeatCode::of_state(state), Some(code));
            assert_ne!(state as i32, i32::from(bits), "SeatState numbers start at UNSPECIFIED");
        }
        assert_eq!(SeatCode::from_bits(3), None);
        assert_eq!(SeatCode::of_state(SeatState::Unspecified), None);
        // One held seat then three sold ones, packed: 0b10_10_10_01.
        assert_eq!(
            decode(SeatStatesEncoding::Packed as i32, &[0b1010_1001], 4).unwrap(),
            [SeatState::Held, SeatState::Sold, SeatState::Sold, SeatState::Sold]
        );
    }
}
