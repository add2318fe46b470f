//! The protobuf codec of every generated client and server: prost's, with smaller buffers.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Bytes tonic allocates up front for each call's encoder and decoder. A server stream keeps
/// its encoder's buffer for its whole life, so tonic's default of 8 KiB costs 80 MB for
/// 10,000 `WatchSeatMap` watchers; the mesh's messages are mostly under 1 KiB, and a larger
/// one (a seat map) grows the buffer as it needs.
const BUFFER_SIZE: usize = 1024;
/// Encoded bytes a stream gathers before handing them to HTTP/2: tonic's default.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// `tonic_prost::ProstCodec` with [`BUFFER_SIZE`] buffers; `build.rs` makes it the codec of
/// every generated service and client.
#[derive(Debug, Clone)]
pub struct ProstCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        Self { _messages: PhantomData }
    }
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }
}
