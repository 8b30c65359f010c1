//! Compressing and inflating message payloads (RFC 7692 §7.2).
//!
//! Owns the zlib streams of one connection, created on first use (an idle
//! connection holds none), the `00 00 ff ff` tail (stripped on send,
//! restored on receive), context resets, and inflating under a size limit
//! so that a compression bomb stops at the limit, not at its full size.

use std::mem::MaybeUninit;

use zlib_rs::{Deflate, DeflateConfig as ZConfig, DeflateFlush, Inflate, InflateFlush, Status};

use super::{DeflateConfig, DeflateParams};
use crate::connection::Role;

const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Inflate at most this much per step, so the limit is checked often.
const INFLATE_STEP: usize = 64 * 1024;

/// Why a compressed message could not be inflated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// The inflated message would exceed the limit.
    TooBig,
    /// The data is not valid deflate.
    Invalid(&'static str),
}

/// The permessage-deflate state of one connection.
pub(crate) struct PerMessageDeflate {
    compressor: Option<Box<Deflate>>,
    decompressor: Option<Box<Inflate>>,
    compress_bits: u8,
    decompress_bits: u8,
    reset_compressor: bool,
    reset_decompressor: bool,
    level: i32,
    mem_level: i32,
    min_size: usize,
    /// The peer ended its deflate stream (BFINAL): start a new one.
    stream_ended: bool,
}

impl std::fmt::Debug for PerMessageDeflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerMessageDeflate")
            .field("compress_bits", &self.compress_bits)
            .field("decompress_bits", &self.decompress_bits)
            .finish_non_exhaustive()
    }
}

/// zlib cannot make raw deflate streams with an 8-bit window; like other
/// implementations, use 9 (an inflater with a larger window reads any
/// stream made with a smaller one).
fn zlib_bits(bits: u8) -> u8 {
    bits.clamp(9, 15)
}

impl PerMessageDeflate {
    pub(crate) fn new(role: Role, params: &DeflateParams, config: &DeflateConfig) -> Self {
        let (compress_bits, decompress_bits, reset_compressor, reset_decompressor) = match role {
            Role::Server => (
                params.server_max_window_bits,
                params.client_max_window_bits,
                params.server_no_context_takeover,
                params.client_no_context_takeover,
            ),
            Role::Client => (
                params.client_max_window_bits,
                params.server_max_window_bits,
                params.client_no_context_takeover,
                params.server_no_context_takeover,
            ),
        };
        Self {
            compressor: None,
            decompressor: None,
            compress_bits: zlib_bits(compress_bits),
            decompress_bits: zlib_bits(decompress_bits),
            reset_compressor,
            reset_decompressor,
            level: i32::from(config.level.clamp(1, 9)),
            mem_level: i32::from(config.mem_level.clamp(1, 9)),
            min_size: config.min_message_size,
            stream_ended: false,
        }
    }

    /// Whether a message of `len` bytes is worth compressing.
    pub(crate) fn should_compress(&self, len: usize) -> bool {
        len >= self.min_size
    }

    /// Appends the compressed form of `input` to `out`, tail stripped.
    pub(crate) fn compress(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        let (bits, level, mem_level) = (self.compress_bits, self.level, self.mem_level);
        let c = self.compressor.get_or_insert_with(|| {
            Box::new(Deflate::new_with_config(ZConfig {
                level,
                window_bits: -i32::from(bits),
                mem_level,
                ..ZConfig::default()
            }))
        });
        let start = out.len();
        loop {
            out.reserve(input.len() + input.len() / 64 + 64);
            let spare = out.spare_capacity_mut();
            let room = spare.len();
            let (in0, out0) = (c.total_in(), c.total_out());
            // A sync flush cannot fail on a valid stream with room to write.
            let _ = c.compress_uninit(input, spare, DeflateFlush::SyncFlush);
            let read = (c.total_in() - in0) as usize;
            let wrote = (c.total_out() - out0) as usize;
            // SAFETY: the compressor initialised the first `wrote` bytes of
            // the spare capacity (total_out counts exactly those).
            unsafe { out.set_len(out.len() + wrote) };
            input = &input[read..];
            if input.is_empty() && wrote < room {
                break;
            }
            if read == 0 && wrote == 0 {
                break;
            }
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.reset_compressor {
            // No context is kept between messages, so nothing need be kept
            // in memory either: an idle connection holds no compressor.
            self.compressor = None;
        }
    }

    /// Inflates one frame's payload of a compressed message into `out`,
    /// failing as soon as `out` would pass `limit` bytes.
    pub(crate) fn decompress(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        self.inflate(input, out, limit)
    }

    /// Ends a compressed message: restores the tail, and resets the
    /// context when the peer does not keep it.
    pub(crate) fn finish_message(
        &mut self,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        let r = self.inflate(&TAIL, out, limit);
        if self.reset_decompressor {
            self.decompressor = None;
        } else if self.stream_ended || r.is_err() {
            if let Some(d) = &mut self.decompressor {
                d.reset(false);
            }
        }
        self.stream_ended = false;
        r
    }

    fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        let bits = self.decompress_bits;
        let d = self
            .decompressor
            .get_or_insert_with(|| Box::new(Inflate::new(false, bits)));
        while !self.stream_ended {
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            // Grow with the message (no 64 KiB buffer for a short one),
            // never past the limit by more than one byte.
            let step = (limit + 1 - out.len())
                .min(INFLATE_STEP)
                .min(out.len().max(input.len() * 4).max(256));
            out.reserve(step);
            let spare: &mut [MaybeUninit<u8>] = &mut out.spare_capacity_mut()[..step];
            let (in0, out0) = (d.total_in(), d.total_out());
            let status = d
                .decompress_uninit(input, spare, InflateFlush::SyncFlush)
                .map_err(|e| InflateError::Invalid(e.as_str()))?;
            let read = (d.total_in() - in0) as usize;
            let wrote = (d.total_out() - out0) as usize;
            // SAFETY: the inflater initialised the first `wrote` bytes of
            // the spare capacity (total_out counts exactly those).
            unsafe { out.set_len(out.len() + wrote) };
            input = &input[read..];
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                self.stream_ended = true;
                break;
            }
            if input.is_empty() && wrote < step {
                break;
            }
            if read == 0 && wrote == 0 {
                break;
            }
        }
        Ok(())
    }
}
