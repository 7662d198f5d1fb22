//! Fuzzes the incremental frame decoder PID 1's non-blocking control server drives: the
//! same bytes fed in arbitrary chunks (as a socket delivers them) must give the same frame
//! bodies, in order, and the same refusal as the blocking `read_frame` over the whole
//! stream; `feed` never takes more bytes than it was given, takes all of them unless it
//! completes a frame, and refuses a frame over the limit when its header is complete,
//! before its body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use manifest::protocol::{read_frame, FrameDecoder, FrameError};

/// A small limit so that both sides of it are reached by short inputs.
const LIMIT: u32 = 300;

#[derive(Debug, PartialEq)]
enum End {
    Clean,
    Truncated,
    TooLarge(u32),
}

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (chunks, data) = input;
    // The reference: the blocking reader over the whole stream.
    let mut want = Vec::new();
    let mut stream = &data[..];
    let want_end = loop {
        match read_frame(&mut stream, LIMIT) {
            Ok(Some(body)) => want.push(body),
            Ok(None) => break End::Clean,
            Err(FrameError::Truncated) => break End::Truncated,
            Err(FrameError::TooLarge(n, l)) => {
                assert_eq!(l, LIMIT);
                assert!(n > LIMIT);
                break End::TooLarge(n);
            }
            Err(e) => panic!("a byte slice cannot fail to read: {e}"),
        }
    };
    // The decoder, fed in chunks whose sizes come from `chunks` (1..=64 bytes, cycled).
    let mut dec = FrameDecoder::new(LIMIT);
    let mut got = Vec::new();
    let mut at = 0;
    let mut i = 0;
    let got_end = loop {
        if at == data.len() {
            break if dec.in_frame() {
                End::Truncated
            } else {
                End::Clean
            };
        }
        let size = chunks
            .get(i % chunks.len().max(1))
            .map_or(7, |b| 1 + (*b as usize % 64));
        i += 1;
        let end = (at + size).min(data.len());
        let mut piece = &data[at..end];
        let mut stop = None;
        while !piece.is_empty() {
            assert!(dec.wanted() > 0);
            match dec.feed(piece) {
                Ok((used, body)) => {
                    assert!(used > 0 && used <= piece.len(), "{used} of {}", piece.len());
                    match body {
                        Some(b) => {
                            assert!(b.len() <= LIMIT as usize);
                            got.push(b);
                        }
                        // A frame not yet complete takes every byte it is given.
                        None => assert_eq!(used, piece.len()),
                    }
                    piece = &piece[used..];
                }
                Err(FrameError::TooLarge(n, _)) => {
                    stop = Some(End::TooLarge(n));
                    break;
                }
                Err(e) => panic!("feed fails only on an oversized frame: {e}"),
            }
        }
        if let Some(s) = stop {
            break s;
        }
        at = end;
    };
    assert_eq!(got, want);
    assert_eq!(got_end, want_end);
});
