//! Fuzzes what PID 1 does with the bytes a client sends: framing (`read_frame` with the
//! request size limit) and decoding (`decode_request`). Neither may panic, hang or allocate
//! beyond the limit, and every request that decodes must survive an encode/decode round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use manifest::protocol::{decode_request, encode, read_frame, MAX_REQUEST_BYTES};

fuzz_target!(|data: &[u8]| {
    // The bytes as one frame body.
    if let Ok(req) = decode_request(data) {
        let frame = encode(&req);
        let body = read_frame(&mut &frame[..], MAX_REQUEST_BYTES.max(frame.len() as u32))
            .expect("an encoded frame reads back")
            .expect("an encoded frame is not empty");
        assert_eq!(decode_request(&body).expect("an encoded request decodes"), req);
    }
    // The bytes as a stream of frames, as a connection delivers them.
    let mut stream = data;
    while let Ok(Some(body)) = read_frame(&mut stream, MAX_REQUEST_BYTES) {
        assert!(body.len() <= MAX_REQUEST_BYTES as usize);
        let _ = decode_request(&body);
    }
});
