//! The framing of the control protocol: a 4-byte big-endian length, then that many bytes of
//! JSON; bounded on both ends ([`super::MAX_REQUEST_BYTES`], [`super::MAX_RESPONSE_BYTES`]).
//! [`FrameDecoder`] is the one incremental decoder, shared by PID 1, the CLI and the fuzzer.

use super::Request;
use serde::Serialize;
use std::io::{self, Read, Write};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is larger than the {1}-byte limit")]
    TooLarge(u32, u32),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Encodes one message as a frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("protocol types always serialize");
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a request frame body; this is the entry point the fuzz target drives.
pub fn decode_request(body: &[u8]) -> Result<Request, serde_json::Error> {
    serde_json::from_slice(body)
}

/// An incremental frame decoder: bytes in as they arrive, frame bodies out. It asks for
/// no more than the current frame needs ([`FrameDecoder::wanted`]), so a reader that
/// reads at most that many bytes never takes bytes of the next frame, and it refuses an
/// oversized frame as soon as its length is known, before its body is read. PID 1's
/// control server (non-blocking) and the CLI's [`read_frame`] (blocking) share it.
#[derive(Debug)]
pub struct FrameDecoder {
    limit: u32,
    header: [u8; 4],
    header_len: usize,
    body: Vec<u8>,
    /// The body length, once the header is complete.
    len: Option<usize>,
}

impl FrameDecoder {
    pub fn new(limit: u32) -> FrameDecoder {
        FrameDecoder {
            limit,
            header: [0; 4],
            header_len: 0,
            body: Vec::new(),
            len: None,
        }
    }

    /// How many more bytes the frame in progress needs (the header first).
    pub fn wanted(&self) -> usize {
        match self.len {
            None => 4 - self.header_len,
            Some(n) => n - self.body.len(),
        }
    }

    /// Whether part of a frame has been taken in.
    pub fn in_frame(&self) -> bool {
        self.header_len > 0
    }

    /// Takes bytes from `data`, at most up to the end of the current frame. Returns how
    /// many were used and the frame body if it is now complete (the decoder then starts
    /// over). An oversized length is an error as soon as the header is complete.
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, Option<Vec<u8>>), FrameError> {
        let mut used = 0;
        if self.len.is_none() {
            let n = (4 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            used += n;
            if self.header_len < 4 {
                return Ok((used, None));
            }
            let len = u32::from_be_bytes(self.header);
            if len > self.limit {
                return Err(FrameError::TooLarge(len, self.limit));
            }
            self.len = Some(len as usize);
            self.body = Vec::with_capacity((len as usize).min(1 << 20));
        }
        let n = self.wanted().min(data.len() - used);
        self.body.extend_from_slice(&data[used..used + n]);
        used += n;
        if self.wanted() > 0 {
            return Ok((used, None));
        }
        let body = std::mem::take(&mut self.body);
        self.header_len = 0;
        self.len = None;
        Ok((used, Some(body)))
    }
}

/// Reads one frame body, blocking. `Ok(None)` on a clean end of stream before a frame.
pub fn read_frame(r: &mut impl Read, limit: u32) -> Result<Option<Vec<u8>>, FrameError> {
    let mut dec = FrameDecoder::new(limit);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let want = dec.wanted().clamp(1, chunk.len());
        let n = match r.read(&mut chunk[..want]) {
            Ok(0) if !dec.in_frame() => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if let (_, Some(body)) = dec.feed(&chunk[..n])? {
            return Ok(Some(body));
        }
    }
}

/// Writes one message as a frame, blocking.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    w.write_all(&encode(msg))
}
