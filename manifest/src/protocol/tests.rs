//! Unit tests of `protocol.rs`.

use super::*;

#[test]
fn request_round_trip() {
    let req = Request::new(Op::Logs {
        service: "ssh".into(),
        lines: Some(10),
        since_ms: None,
        follow: true,
    });
    let frame = encode(&req);
    let body = read_frame(&mut &frame[..], MAX_REQUEST_BYTES)
        .unwrap()
        .unwrap();
    assert_eq!(decode_request(&body).unwrap(), req);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("\"op\":\"logs\""), "{text}");
}

#[test]
fn oversized_and_truncated_frames() {
    let mut big = (MAX_REQUEST_BYTES + 1).to_be_bytes().to_vec();
    big.extend_from_slice(b"{}");
    assert!(matches!(
        read_frame(&mut &big[..], MAX_REQUEST_BYTES),
        Err(FrameError::TooLarge(_, _))
    ));
    let short = [0u8, 0, 0, 10, b'{'];
    assert!(matches!(
        read_frame(&mut &short[..], MAX_REQUEST_BYTES),
        Err(FrameError::Truncated)
    ));
    assert!(read_frame(&mut &[][..], MAX_REQUEST_BYTES)
        .unwrap()
        .is_none());
}

#[test]
fn deep_nesting_up_to_the_size_limit_is_an_error_not_a_crash() {
    // The fuzzer's inputs stay small; this is the largest request init will parse.
    let depth = (MAX_REQUEST_BYTES as usize - 64) / 2;
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let body = format!(
            r#"{{"version":1,"op":"exec","service":"s","args":{}1{}}}"#,
            open.repeat(depth / open.len()),
            close.repeat(depth / open.len())
        );
        assert!(body.len() <= MAX_REQUEST_BYTES as usize);
        assert!(decode_request(body.as_bytes()).is_err());
    }
}

#[test]
fn decoder_splits_frames_at_any_byte_boundary() {
    let mut stream = encode(&Request::new(Op::Ps {}));
    stream.extend(encode(&Request::new(Op::Version {})));
    stream.extend([0, 0, 0, 0]); // an empty frame
    for chunk in [1, 2, 3, 5, 7, 64, 4096] {
        let mut dec = FrameDecoder::new(MAX_REQUEST_BYTES);
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk) {
            let mut rest = piece;
            while !rest.is_empty() {
                let (used, frame) = dec.feed(rest).unwrap();
                assert!(used > 0 || frame.is_some());
                rest = &rest[used..];
                frames.extend(frame);
            }
        }
        assert_eq!(frames.len(), 3, "chunk {chunk}");
        assert_eq!(decode_request(&frames[0]).unwrap().op, Op::Ps {});
        assert_eq!(decode_request(&frames[1]).unwrap().op, Op::Version {});
        assert!(frames[2].is_empty());
        assert!(!dec.in_frame());
    }
}

#[test]
fn decoder_never_asks_past_the_frame_and_refuses_early() {
    let frame = encode(&Request::new(Op::Ps {}));
    let mut dec = FrameDecoder::new(MAX_REQUEST_BYTES);
    assert_eq!(dec.wanted(), 4);
    assert_eq!(dec.feed(&frame[..2]).unwrap(), (2, None));
    assert_eq!(dec.wanted(), 2);
    let (used, _) = dec.feed(&frame[2..]).unwrap();
    assert_eq!(used, frame.len() - 2);
    let mut doubled = frame.clone();
    doubled.extend(&frame);
    let mut dec = FrameDecoder::new(MAX_REQUEST_BYTES);
    let (used, body) = dec.feed(&doubled).unwrap();
    assert_eq!(used, frame.len(), "stops at the end of the first frame");
    assert!(body.is_some());
    let mut dec = FrameDecoder::new(16);
    assert!(matches!(
        dec.feed(&17u32.to_be_bytes()),
        Err(FrameError::TooLarge(17, 16))
    ));
    // Reading several frames in a row from one stream loses nothing.
    let mut r = &doubled[..];
    assert!(read_frame(&mut r, MAX_REQUEST_BYTES).unwrap().is_some());
    assert!(read_frame(&mut r, MAX_REQUEST_BYTES).unwrap().is_some());
    assert!(read_frame(&mut r, MAX_REQUEST_BYTES).unwrap().is_none());
}

#[test]
fn unknown_fields_are_rejected() {
    assert!(decode_request(br#"{"version":1,"op":"ps","extra":1}"#).is_err());
    assert!(decode_request(br#"{"version":1,"op":"nope"}"#).is_err());
    assert!(decode_request(br#"{"version":1,"op":"ps"}"#).is_ok());
}
