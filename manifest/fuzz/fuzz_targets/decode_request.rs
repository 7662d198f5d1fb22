//! Fuzzes what PID 1 does with the bytes a client sends: framing (`read_frame` with the
//! request size limit) and decoding of every request type (`decode_request`, and
//! `decode_update_request` for the update ops PID 1 tries when the first fails). Neither
//! may panic, hang or allocate beyond the limit, and every request that decodes must
//! survive an encode/decode round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use manifest::protocol::{decode_request, encode, read_frame, MAX_REQUEST_BYTES};
use manifest::protocol_update::decode_update_request;

fn round_trip(frame: &[u8]) -> Vec<u8> {
    read_frame(&mut &frame[..], MAX_REQUEST_BYTES.max(frame.len() as u32))
        .expect("an encoded frame reads back")
        .expect("an encoded frame is not empty")
}

fn decode_body(body: &[u8]) {
    if let Ok(req) = decode_request(body) {
        let body = round_trip(&encode(&req));
        assert_eq!(
            decode_request(&body).expect("an encoded request decodes"),
            req
        );
    } else if let Ok(req) = decode_update_request(body) {
        let body = round_trip(&encode(&req));
        assert_eq!(
            decode_update_request(&body).expect("an encoded update request decodes"),
            req
        );
        let _ = (req.op.is_read_only(), req.op.fds());
    }
}

fuzz_target!(|data: &[u8]| {
    // The bytes as one frame body.
    decode_body(data);
    // The bytes as a stream of frames, as a connection delivers them.
    let mut stream = data;
    while let Ok(Some(body)) = read_frame(&mut stream, MAX_REQUEST_BYTES) {
        assert!(body.len() <= MAX_REQUEST_BYTES as usize);
        decode_body(&body);
    }
});
