use proptest::prelude::*;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .filter(|t| *t != "|")
        .map(|t| u8::from_str_radix(t, 16).unwrap())
        .collect()
}

/// Decoder as seen by a server (peer is a client: lenient GOAWAY).
fn server_side() -> Decoder {
    Decoder::new(DEFAULT_WINDOW, true)
}

/// Decoder as seen by a client (peer is a server: strict GOAWAY).
fn client_side() -> Decoder {
    Decoder::new(DEFAULT_WINDOW, false)
}

fn decode_one(d: &Decoder, bytes: &[u8]) -> Frame<'static> {
    let leaked: &'static [u8] = Box::leak(bytes.to_vec().into_boxed_slice());
    match d.decode(leaked).unwrap() {
        Decoded::Frame { frame, consumed } => {
            assert_eq!(consumed, leaked.len());
            frame
        }
        Decoded::NeedMore => panic!("incomplete"),
    }
}

#[test]
fn spec_worked_frames_decode() {
    let d = server_side();
    assert_eq!(
        decode_one(&d, &hex("00 00 04 12 00 00 00 05 | 00 00 00 00")),
        Frame::Data {
            stream_id: 5,
            flags: FLAG_SYN,
            payload: &[0, 0, 0, 0]
        }
    );
    assert_eq!(
        decode_one(&d, &hex("00 00 04 20 00 00 00 05 | 00 00 00 20")),
        Frame::WndInc {
            stream_id: 5,
            increment: 32
        }
    );
    assert_eq!(
        decode_one(&d, &hex("00 00 00 11 00 00 00 02")),
        Frame::Data {
            stream_id: 2,
            flags: FLAG_FIN,
            payload: &[]
        }
    );
    assert_eq!(
        decode_one(&d, &hex("00 00 04 00 00 00 00 02 | 00 00 00 06")),
        Frame::Rst {
            stream_id: 2,
            code: ErrorCode::StreamCancelled
        }
    );
}

#[test]
fn spec_worked_frames_encode() {
    let mut out = Vec::new();
    encode_data(&mut out, 5, FLAG_SYN, &[0, 0, 0, 0]);
    assert_eq!(out, hex("00 00 04 12 00 00 00 05 00 00 00 00"));
    out.clear();
    encode_wndinc(&mut out, 5, 32);
    assert_eq!(out, hex("00 00 04 20 00 00 00 05 00 00 00 20"));
    out.clear();
    encode_data(&mut out, 2, FLAG_FIN, &[]);
    assert_eq!(out, hex("00 00 00 11 00 00 00 02"));
    out.clear();
    encode_rst(&mut out, 2, ErrorCode::StreamCancelled);
    assert_eq!(out, hex("00 00 04 00 00 00 00 02 00 00 00 06"));
}

#[test]
fn byte3_values_for_each_type_and_flag() {
    let byte3 = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::new();
        f(&mut out);
        out[3]
    };
    assert_eq!(byte3(&|o| encode_data(o, 3, FLAG_SYN, b"")), 0x12);
    assert_eq!(byte3(&|o| encode_data(o, 3, FLAG_FIN, b"")), 0x11);
    assert_eq!(
        byte3(&|o| encode_data(o, 3, FLAG_SYN | FLAG_FIN, b"")),
        0x13
    );
    assert_eq!(byte3(&|o| encode_data(o, 3, 0, b"x")), 0x10);
    assert_eq!(byte3(&|o| encode_wndinc(o, 3, 1)), 0x20);
    assert_eq!(byte3(&|o| encode_rst(o, 3, ErrorCode::None)), 0x00);
    assert_eq!(byte3(&|o| encode_goaway(o, 0, ErrorCode::None, b"")), 0x30);
}

#[test]
fn goaway_encodes_length_eight_plus_message() {
    let mut out = Vec::new();
    encode_goaway(&mut out, 7, ErrorCode::Protocol, b"bye");
    assert_eq!(
        out,
        hex("00 00 0b 30 00 00 00 00 00 00 00 07 00 00 00 01 62 79 65")
    );
    assert_eq!(
        decode_one(&client_side(), &out),
        Frame::GoAway {
            last_stream_id: 7,
            code: ErrorCode::Protocol,
            message: b"bye"
        }
    );
}

#[test]
fn goaway_message_is_capped() {
    let mut out = Vec::new();
    encode_goaway(
        &mut out,
        1,
        ErrorCode::None,
        &vec![b'x'; MAX_GOAWAY_MESSAGE + 10],
    );
    assert_eq!(out.len(), HEADER_LEN + 8 + MAX_GOAWAY_MESSAGE);
}

#[test]
fn error_codes_round_trip() {
    let names = [
        "None",
        "Protocol",
        "Internal",
        "FlowControl",
        "StreamClosed",
        "StreamRefused",
        "StreamCancelled",
        "StreamReset",
        "FrameSizeError",
        "AcceptQueueFull",
        "EnhanceYourCalm",
        "RemoteGoneAway",
        "StreamsExhausted",
        "WriteTimeout",
        "SessionClosed",
        "PeerEOF",
    ];
    for (v, name) in names.iter().enumerate() {
        let code = ErrorCode::from_u32(v as u32);
        assert_eq!(code.name(), *name);
        assert_eq!(code.as_u32(), v as u32);
        assert!(!matches!(code, ErrorCode::Unknown(_)));
    }
    assert_eq!(ErrorCode::from_u32(0x10), ErrorCode::Unknown(0x10));
    assert_eq!(ErrorCode::from_u32(u32::MAX).as_u32(), u32::MAX);
    assert_eq!(ErrorCode::StreamRefused.as_u32(), 5);
    assert_eq!(ErrorCode::PeerEof.to_string(), "PeerEOF(0xf)");
}

#[test]
fn partial_input_needs_more() {
    let mut out = Vec::new();
    encode_data(&mut out, 3, 0, b"hello");
    let d = server_side();
    for cut in 0..out.len() {
        assert_eq!(
            d.decode(&out[..cut]).unwrap(),
            Decoded::NeedMore,
            "cut {cut}"
        );
    }
}

#[test]
fn unknown_types_are_errors() {
    for ty in 4u8..16 {
        let buf = [0, 0, 0, ty << 4, 0, 0, 0, 3];
        assert_eq!(server_side().decode(&buf), Err(FrameError::UnknownType(ty)));
    }
}

#[test]
fn rst_and_wndinc_need_length_four() {
    for ty in [0x00u8, 0x20] {
        for len in [0u8, 3, 5, 8] {
            let mut buf = vec![0, 0, len, ty, 0, 0, 0, 3];
            buf.extend(std::iter::repeat_n(1, len as usize));
            let err = server_side().decode(&buf).unwrap_err();
            assert!(matches!(err, FrameError::BadLength { len: l, .. } if l == len as u32));
            assert_eq!(err.code(), ErrorCode::FrameSizeError);
        }
    }
}

#[test]
fn zero_wndinc_is_an_error() {
    let buf = hex("00 00 04 20 00 00 00 05 00 00 00 00");
    assert_eq!(
        server_side().decode(&buf),
        Err(FrameError::ZeroIncrement(5))
    );
    // only 31 bits count
    let buf = hex("00 00 04 20 00 00 00 05 80 00 00 00");
    assert_eq!(
        server_side().decode(&buf),
        Err(FrameError::ZeroIncrement(5))
    );
}

#[test]
fn zero_stream_id_is_an_error_except_goaway() {
    for ty in [0x00u8, 0x10, 0x20] {
        let buf = [0, 0, 4, ty, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(matches!(
            server_side().decode(&buf),
            Err(FrameError::ZeroStreamId(_))
        ));
    }
}

#[test]
fn stream_id_high_bit_is_ignored() {
    let buf = hex("00 00 00 11 80 00 00 02");
    assert_eq!(
        decode_one(&server_side(), &buf),
        Frame::Data {
            stream_id: 2,
            flags: FLAG_FIN,
            payload: &[]
        }
    );
}

#[test]
fn data_length_is_limited_to_the_window() {
    let d = server_side();
    let mut ok = vec![0x04, 0x00, 0x00, 0x10, 0, 0, 0, 3];
    assert_eq!(d.decode_header(&ok).unwrap().unwrap().len, DEFAULT_WINDOW);
    ok[2] = 1; // 0x040001
    assert_eq!(
        d.decode_header(&ok),
        Err(FrameError::DataTooLarge {
            len: DEFAULT_WINDOW + 1,
            max: DEFAULT_WINDOW
        })
    );
    // a huge announced length is rejected on the header alone
    let huge = [0xff, 0xff, 0xff, 0x10, 0, 0, 0, 3];
    assert!(matches!(
        d.decode(&huge),
        Err(FrameError::DataTooLarge { .. })
    ));
}

#[test]
fn goaway_from_a_server_needs_eight_bytes() {
    let buf = hex("00 00 07 30 00 00 00 00 00 00 00 00 00 00 00");
    assert!(matches!(
        client_side().decode(&buf),
        Err(FrameError::BadLength {
            ty: FrameType::GoAway,
            len: 7
        })
    ));
    let buf = hex("00 00 08 30 00 00 00 01 00 00 00 00 00 00 00 00");
    assert_eq!(
        client_side().decode(&buf),
        Err(FrameError::GoAwayStreamId(1))
    );
}

#[test]
fn goaway_from_a_client_with_short_length_is_accepted() {
    // Rust SDK bug: length = len("invalid frame") = 13, body really 8 + 13.
    let mut body = Vec::new();
    body.extend_from_slice(&5u32.to_be_bytes());
    body.extend_from_slice(&1u32.to_be_bytes());
    body.extend_from_slice(b"invalid frame");
    let mut buf = vec![0, 0, 13, 0x30, 0, 0, 0, 0];
    buf.extend_from_slice(&body);
    match server_side().decode(&buf).unwrap() {
        Decoded::Frame { frame, consumed } => {
            assert_eq!(consumed, 8 + 13);
            assert_eq!(
                frame,
                Frame::GoAway {
                    last_stream_id: 5,
                    code: ErrorCode::Protocol,
                    message: b"inval"
                }
            );
        }
        Decoded::NeedMore => panic!("need more"),
    }
    // length 0: still waits for (and reads) the 8 fixed bytes
    let buf = hex("00 00 00 30 00 00 00 00 00 00 00 03 00 00 00 0e");
    assert_eq!(server_side().decode(&buf[..12]).unwrap(), Decoded::NeedMore);
    assert_eq!(
        decode_one(&server_side(), &buf),
        Frame::GoAway {
            last_stream_id: 3,
            code: ErrorCode::SessionClosed,
            message: b""
        }
    );
}

#[test]
fn long_goaway_only_needs_the_kept_prefix() {
    let d = client_side();
    let h = FrameHeader {
        len: MAX_FRAME_LEN,
        ty: FrameType::GoAway,
        flags: 0,
        stream_id: 0,
    };
    assert_eq!(d.body_len(&h), 8 + MAX_GOAWAY_MESSAGE);
}

fn arb_code() -> impl Strategy<Value = ErrorCode> {
    any::<u32>().prop_map(ErrorCode::from_u32)
}

fn arb_frame() -> impl Strategy<Value = (u8, u32, u32, u8, Vec<u8>, ErrorCode)> {
    (
        0u8..4,
        1u32..=STREAM_ID_MASK,
        1u32..=STREAM_ID_MASK,
        0u8..16,
        proptest::collection::vec(any::<u8>(), 0..600),
        arb_code(),
    )
}

proptest! {
    #[test]
    fn encode_decode_round_trip((ty, id, n, flags, body, code) in arb_frame()) {
        let frame = match ty {
            0 => Frame::Rst { stream_id: id, code },
            1 => Frame::Data { stream_id: id, flags, payload: &body },
            2 => Frame::WndInc { stream_id: id, increment: n },
            _ => Frame::GoAway { last_stream_id: n, code, message: &body },
        };
        let mut out = Vec::new();
        frame.encode(&mut out);
        for d in [server_side(), client_side()] {
            match d.decode(&out).unwrap() {
                Decoded::Frame { frame: back, consumed } => {
                    prop_assert_eq!(consumed, out.len());
                    prop_assert_eq!(back, frame);
                }
                Decoded::NeedMore => prop_assert!(false, "need more"),
            }
            for cut in [0, 1, 7, out.len() - 1] {
                prop_assert_eq!(d.decode(&out[..cut]).unwrap(), Decoded::NeedMore);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        for d in [server_side(), client_side()] {
            let whole = d.decode(&bytes);
            if let Ok(Decoded::Frame { consumed, .. }) = whole {
                prop_assert!(consumed <= bytes.len());
            }
            // a prefix never disagrees with the whole: it either needs more
            // or gives the same answer
            for cut in 0..bytes.len() {
                match d.decode(&bytes[..cut]) {
                    Ok(Decoded::NeedMore) => {}
                    other => prop_assert_eq!(other, whole),
                }
            }
        }
    }
}
