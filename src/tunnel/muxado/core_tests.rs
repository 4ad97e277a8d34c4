use std::collections::HashMap;
use std::task::Poll;

use proptest::prelude::*;

use super::*;
use crate::tunnel::muxado::frame::{encode_data, Decoded, Decoder, MAX_GOAWAY_MESSAGE};

/// A decoded frame that owns its bytes, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum F {
    Data {
        id: u32,
        flags: u8,
        payload: Vec<u8>,
    },
    Rst {
        id: u32,
        code: ErrorCode,
    },
    WndInc {
        id: u32,
        inc: u32,
    },
    GoAway {
        last: u32,
        code: ErrorCode,
        msg: String,
    },
}

fn parse_all(bytes: &[u8]) -> Vec<F> {
    let d = Decoder::new(MAX_FRAME_LEN, false);
    let mut at = 0;
    let mut out = Vec::new();
    while at < bytes.len() {
        match d.decode(&bytes[at..]).expect("our own output decodes") {
            Decoded::Frame { frame, consumed } => {
                out.push(match frame {
                    Frame::Data {
                        stream_id,
                        flags,
                        payload,
                    } => F::Data {
                        id: stream_id,
                        flags,
                        payload: payload.to_vec(),
                    },
                    Frame::Rst { stream_id, code } => F::Rst {
                        id: stream_id,
                        code,
                    },
                    Frame::WndInc {
                        stream_id,
                        increment,
                    } => F::WndInc {
                        id: stream_id,
                        inc: increment,
                    },
                    Frame::GoAway {
                        last_stream_id,
                        code,
                        message,
                    } => F::GoAway {
                        last: last_stream_id,
                        code,
                        msg: String::from_utf8_lossy(message).into_owned(),
                    },
                });
                at += consumed;
            }
            Decoded::NeedMore => panic!("truncated output"),
        }
    }
    out
}

fn out_frames(c: &mut Core) -> Vec<F> {
    parse_all(&c.take_output())
}

fn client() -> Core {
    Core::new(Role::Client, Config::default())
}

fn server() -> Core {
    Core::new(Role::Server, Config::default())
}

fn cfg(max_streams: usize, accept_backlog: usize) -> Config {
    Config {
        max_streams,
        accept_backlog,
        ..Config::default()
    }
}

/// Moves all output of `from` into `to`.
fn pump(from: &mut Core, to: &mut Core) -> Result<(), MuxError> {
    let bytes = from.take_output();
    let n = to.receive(&bytes)?;
    assert_eq!(n, bytes.len(), "whole frames are always consumed");
    Ok(())
}

fn feed(c: &mut Core, bytes: &[u8]) -> Result<usize, MuxError> {
    c.receive(bytes)
}

fn raw_data(id: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_data(&mut v, id, flags, payload);
    v
}

fn ready<T>(p: Poll<T>) -> T {
    match p {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("unexpectedly pending"),
    }
}

fn read_all(c: &mut Core, id: u32) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match c.read(id, &mut buf) {
            Poll::Ready(Ok(0)) | Poll::Pending => return got,
            Poll::Ready(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Poll::Ready(Err(e)) => panic!("read error {e}"),
        }
    }
}

fn events(c: &mut Core) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn client_opens_odd_ids_from_three_and_server_accepts() {
    let (mut c, mut s) = (client(), server());
    let a = ready(c.open()).unwrap();
    let b = ready(c.open()).unwrap();
    assert_eq!((a, b), (3, 5));
    assert!(!c.has_output(), "no frame before the first write");
    assert_eq!(ready(c.write(a, b"\0\0\0\0")).unwrap(), 4);
    assert_eq!(
        parse_all(c.output()),
        vec![F::Data {
            id: 3,
            flags: FLAG_SYN,
            payload: vec![0; 4]
        }]
    );
    pump(&mut c, &mut s).unwrap();
    assert_eq!(
        events(&mut s),
        vec![Event::StreamOpened(3), Event::Readable(3)]
    );
    assert_eq!(s.accept(), Some(3));
    assert_eq!(s.accept(), None);
    assert_eq!(read_all(&mut s, 3), vec![0; 4]);
    // reading gave the window back
    assert_eq!(out_frames(&mut s), vec![F::WndInc { id: 3, inc: 4 }]);
    // second write: no SYN
    assert_eq!(ready(c.write(a, b"x")).unwrap(), 1);
    assert_eq!(
        out_frames(&mut c),
        vec![F::Data {
            id: 3,
            flags: 0,
            payload: b"x".to_vec()
        }]
    );
}

#[test]
fn server_opens_even_ids_and_late_syns_are_accepted() {
    let (mut c, mut s) = (client(), server());
    let a = ready(s.open()).unwrap();
    let b = ready(s.open()).unwrap();
    assert_eq!((a, b), (2, 4));
    // the second stream speaks first: its SYN arrives before stream 2's
    ready(s.write(b, b"later")).unwrap();
    ready(s.write(a, b"first")).unwrap();
    pump(&mut s, &mut c).unwrap();
    assert_eq!(c.accept(), Some(4));
    assert_eq!(c.accept(), Some(2));
    assert_eq!(read_all(&mut c, 2), b"first");
    assert_eq!(read_all(&mut c, 4), b"later");
}

#[test]
fn one_write_is_one_data_frame() {
    let (mut c, _) = (client(), server());
    let id = ready(c.open()).unwrap();
    let mut payload = vec![0u8; 4];
    payload.extend_from_slice(&[7u8; 5000]);
    assert_eq!(ready(c.write(id, &payload)).unwrap(), payload.len());
    let frames = out_frames(&mut c);
    assert_eq!(frames.len(), 1);
    assert_eq!(
        frames[0],
        F::Data {
            id,
            flags: FLAG_SYN,
            payload
        }
    );
    // vectored: one frame too
    assert_eq!(
        ready(c.poll_write(id, &[b"ab", b"", b"cd"], None)).unwrap(),
        4
    );
    assert_eq!(
        out_frames(&mut c),
        vec![F::Data {
            id,
            flags: 0,
            payload: b"abcd".to_vec()
        }]
    );
}

#[test]
fn window_exhaustion_and_wndinc_resume() {
    let (mut c, mut s) = (client(), server());
    let id = ready(c.open()).unwrap();
    let big = vec![1u8; DEFAULT_WINDOW as usize + 10];
    assert_eq!(ready(c.write(id, &big)).unwrap(), DEFAULT_WINDOW as usize);
    assert!(c.write(id, &big[..10]).is_pending(), "window is used up");
    pump(&mut c, &mut s).unwrap();
    s.accept().unwrap();
    // a small read with data left: no WNDINC yet (batched)
    let mut small = [0u8; 100];
    assert_eq!(ready(s.read(id, &mut small)).unwrap(), 100);
    assert!(!s.has_output());
    assert_eq!(read_all(&mut s, id).len(), DEFAULT_WINDOW as usize - 100);
    let incs: u32 = parse_all(s.output())
        .iter()
        .map(|f| match f {
            F::WndInc { inc, .. } => *inc,
            other => panic!("unexpected {other:?}"),
        })
        .sum();
    assert_eq!(incs, DEFAULT_WINDOW);
    pump(&mut s, &mut c).unwrap();
    assert!(events(&mut c).contains(&Event::WindowOpened(id)));
    assert_eq!(ready(c.write(id, &big[..10])).unwrap(), 10);
}

#[test]
fn data_beyond_the_window_ends_the_session() {
    let mut s = server();
    feed(
        &mut s,
        &raw_data(3, FLAG_SYN, &vec![0; DEFAULT_WINDOW as usize]),
    )
    .unwrap();
    let err = feed(&mut s, &raw_data(3, 0, b"x")).unwrap_err();
    assert!(matches!(
        err,
        MuxError::FlowControl {
            stream_id: 3,
            len: 1,
            window: 0
        }
    ));
    assert!(s.is_ended());
    let frames = out_frames(&mut s);
    assert!(matches!(
        frames.last(),
        Some(F::GoAway {
            last: 3,
            code: ErrorCode::FlowControl,
            ..
        })
    ));
    // and a DATA frame bigger than the window is refused on its header
    let mut s = server();
    let mut big = vec![0x04, 0x00, 0x01, 0x12, 0, 0, 0, 3];
    big.extend_from_slice(&[0; 16]);
    assert!(matches!(feed(&mut s, &big), Err(MuxError::Frame(_))));
}

#[test]
fn fin_half_close_client_first() {
    let (mut c, mut s) = (client(), server());
    let id = ready(c.open()).unwrap();
    ready(c.write(id, b"request")).unwrap();
    c.close_write(id).unwrap();
    assert!(matches!(
        c.write(id, b"more"),
        Poll::Ready(Err(StreamError::WriteClosed))
    ));
    pump(&mut c, &mut s).unwrap();
    let sid = s.accept().unwrap();
    assert_eq!(read_all(&mut s, sid), b"request");
    assert_eq!(ready(s.read(sid, &mut [0; 8])).unwrap(), 0, "EOF after FIN");
    assert!(s.is_read_closed(sid));
    assert_eq!(s.open_streams(), 1, "server may still write");
    ready(s.write(sid, b"response")).unwrap();
    s.close_write(sid).unwrap();
    assert_eq!(s.open_streams(), 0);
    pump(&mut s, &mut c).unwrap();
    assert_eq!(read_all(&mut c, id), b"response");
    assert_eq!(c.open_streams(), 0);
    // state is kept while handles live, freed on release
    assert_eq!((c.tracked_streams(), s.tracked_streams()), (1, 1));
    c.release(id);
    s.release(sid);
    assert_eq!((c.tracked_streams(), s.tracked_streams()), (0, 0));
    // releasing a finished stream sends nothing
    assert!(parse_all(c.output())
        .iter()
        .all(|f| !matches!(f, F::Rst { .. })));
    assert!(parse_all(s.output())
        .iter()
        .all(|f| !matches!(f, F::Rst { .. })));
}

#[test]
fn fin_half_close_server_first() {
    let (mut c, mut s) = (client(), server());
    let id = ready(c.open()).unwrap();
    ready(c.write(id, b"hi")).unwrap();
    pump(&mut c, &mut s).unwrap();
    let sid = s.accept().unwrap();
    ready(s.write(sid, b"bye")).unwrap();
    s.close_write(sid).unwrap();
    pump(&mut s, &mut c).unwrap();
    assert_eq!(read_all(&mut c, id), b"bye");
    assert_eq!(ready(c.read(id, &mut [0; 4])).unwrap(), 0);
    // the client can still send
    ready(c.write(id, b"still here")).unwrap();
    c.close_write(id).unwrap();
    pump(&mut c, &mut s).unwrap();
    assert_eq!(read_all(&mut s, sid), b"histill here");
    assert_eq!((c.open_streams(), s.open_streams()), (0, 0));
}

#[test]
fn syn_fin_without_data() {
    let (mut c, mut s) = (client(), server());
    let id = ready(c.open()).unwrap();
    c.close_write(id).unwrap();
    assert_eq!(
        parse_all(c.output()),
        vec![F::Data {
            id,
            flags: FLAG_SYN | FLAG_FIN,
            payload: vec![]
        }]
    );
    pump(&mut c, &mut s).unwrap();
    let sid = s.accept().unwrap();
    assert_eq!(ready(s.read(sid, &mut [0; 4])).unwrap(), 0);
}

#[test]
fn reset_propagates_and_drops_buffered_data() {
    let (mut c, mut s) = (client(), server());
    let id = ready(c.open()).unwrap();
    ready(c.write(id, b"data")).unwrap();
    pump(&mut c, &mut s).unwrap();
    let sid = s.accept().unwrap();
    c.reset(id, ErrorCode::StreamReset);
    assert_eq!(
        parse_all(c.output()),
        vec![F::Rst {
            id,
            code: ErrorCode::StreamReset
        }]
    );
    pump(&mut c, &mut s).unwrap();
    assert!(events(&mut s).contains(&Event::StreamReset {
        stream_id: sid,
        code: ErrorCode::StreamReset
    }));
    assert_eq!(
        s.read(sid, &mut [0; 8]),
        Poll::Ready(Err(StreamError::ResetByPeer(ErrorCode::StreamReset)))
    );
    assert_eq!(
        s.write(sid, b"x"),
        Poll::Ready(Err(StreamError::ResetByPeer(ErrorCode::StreamReset)))
    );
    assert!(s.is_read_closed(sid));
    assert_eq!(s.open_streams(), 0);
    assert_eq!(
        c.read(id, &mut [0; 8]),
        Poll::Ready(Err(StreamError::Reset(ErrorCode::StreamReset)))
    );
    // in-flight data after our reset is dropped silently
    ready(s.write(sid, b"")).ok();
    feed(&mut c, &raw_data(id, 0, b"late")).unwrap();
    assert!(!c.has_output());
}

#[test]
fn release_of_an_unfinished_stream_sends_rst_cancelled() {
    let (mut c, mut s) = (client(), server());
    let id = ready(c.open()).unwrap();
    // never written: the peer never heard of it, nothing to send
    c.release(id);
    assert!(!c.has_output());
    assert_eq!((c.tracked_streams(), c.open_streams()), (0, 0));
    let id = ready(c.open()).unwrap();
    ready(c.write(id, b"x")).unwrap();
    c.release(id);
    let frames = parse_all(c.output());
    assert_eq!(
        frames.last(),
        Some(&F::Rst {
            id,
            code: ErrorCode::StreamCancelled
        })
    );
    assert_eq!(c.tracked_streams(), 0);
    pump(&mut c, &mut s).unwrap();
    // the server saw SYN then RST: the stream never reaches accept
    assert_eq!(s.accept(), None);
    assert_eq!(s.tracked_streams(), 0);
}

#[test]
fn data_on_unknown_stream_gets_rst_stream_closed() {
    let mut s = server();
    feed(&mut s, &raw_data(7, 0, b"who?")).unwrap();
    assert_eq!(
        out_frames(&mut s),
        vec![F::Rst {
            id: 7,
            code: ErrorCode::StreamClosed
        }]
    );
    // empty DATA without FIN too (as both SDKs do)
    feed(&mut s, &raw_data(9, 0, b"")).unwrap();
    assert_eq!(out_frames(&mut s).len(), 1);
    // an empty FIN on an unknown stream is ignored
    feed(&mut s, &raw_data(7, FLAG_FIN, b"")).unwrap();
    assert!(!s.has_output());
    // WNDINC and RST on unknown streams are ignored
    let mut v = Vec::new();
    encode_wndinc(&mut v, 11, 100);
    encode_rst(&mut v, 13, ErrorCode::Protocol);
    feed(&mut s, &v).unwrap();
    assert!(!s.has_output());
    assert!(!s.is_ended());
}

#[test]
fn data_after_fin_resets_the_stream() {
    let mut s = server();
    feed(&mut s, &raw_data(3, FLAG_SYN | FLAG_FIN, b"a")).unwrap();
    let id = s.accept().unwrap();
    // a duplicate empty FIN is harmless
    feed(&mut s, &raw_data(3, FLAG_FIN, b"")).unwrap();
    assert!(!s.has_output());
    feed(&mut s, &raw_data(3, 0, b"b")).unwrap();
    assert_eq!(
        out_frames(&mut s),
        vec![F::Rst {
            id,
            code: ErrorCode::StreamClosed
        }]
    );
    assert!(!s.is_ended());
}

#[test]
fn syn_flood_is_refused_then_kills_the_session() {
    let mut s = Core::new(Role::Server, cfg(4, 128));
    for i in 0..4 {
        feed(&mut s, &raw_data(3 + 2 * i, FLAG_SYN, b"")).unwrap();
    }
    assert!(!s.has_output());
    feed(&mut s, &raw_data(11, FLAG_SYN, b"payload is skipped")).unwrap();
    assert_eq!(
        out_frames(&mut s),
        vec![F::Rst {
            id: 11,
            code: ErrorCode::StreamRefused
        }]
    );
    assert!(events(&mut s).contains(&Event::StreamRefused {
        stream_id: 11,
        code: ErrorCode::StreamRefused
    }));
    // a stream closing frees a slot and forgives past refusals
    let first = s.accept().unwrap();
    s.reset(first, ErrorCode::StreamCancelled);
    feed(&mut s, &raw_data(13, FLAG_SYN, b"")).unwrap();
    assert_eq!(s.open_streams(), 4);
    s.take_output();
    // keep flooding: more than max_streams refusals in a row is fatal
    let mut id = 15;
    let err = loop {
        match feed(&mut s, &raw_data(id, FLAG_SYN, b"")) {
            Ok(_) => id += 2,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, MuxError::StreamFlood(4)));
    assert_eq!(id, 15 + 2 * 4, "the fifth refusal in a row is fatal");
    assert!(matches!(
        out_frames(&mut s).last(),
        Some(F::GoAway {
            code: ErrorCode::EnhanceYourCalm,
            ..
        })
    ));
}

#[test]
fn full_accept_queue_answers_accept_queue_full() {
    let mut s = Core::new(Role::Server, cfg(500, 2));
    feed(&mut s, &raw_data(3, FLAG_SYN, b"")).unwrap();
    feed(&mut s, &raw_data(5, FLAG_SYN, b"")).unwrap();
    feed(&mut s, &raw_data(7, FLAG_SYN, b"x")).unwrap();
    assert_eq!(
        out_frames(&mut s),
        vec![F::Rst {
            id: 7,
            code: ErrorCode::AcceptQueueFull
        }]
    );
    assert_eq!(s.accept(), Some(3));
    feed(&mut s, &raw_data(9, FLAG_SYN, b"")).unwrap();
    assert!(!s.has_output());
}

#[test]
fn open_waits_at_the_stream_limit() {
    let (mut c, mut s) = (Core::new(Role::Client, cfg(2, 128)), server());
    let a = ready(c.open()).unwrap();
    let _b = ready(c.open()).unwrap();
    assert!(c.open().is_pending());
    ready(c.write(a, b"x")).unwrap();
    c.close_write(a).unwrap();
    pump(&mut c, &mut s).unwrap();
    let sid = s.accept().unwrap();
    s.close_write(sid).unwrap();
    pump(&mut s, &mut c).unwrap();
    assert_eq!(c.open_streams(), 1);
    assert_eq!(ready(c.open()).unwrap(), 7);
}

#[test]
fn wrong_parity_syn_is_fatal() {
    let mut s = server();
    let err = feed(&mut s, &raw_data(2, FLAG_SYN, b"")).unwrap_err();
    assert!(matches!(err, MuxError::WrongParity(2)));
    let mut c = client();
    let err = feed(&mut c, &raw_data(5, FLAG_SYN, b"")).unwrap_err();
    assert!(matches!(err, MuxError::WrongParity(5)));
    assert!(matches!(
        out_frames(&mut c).last(),
        Some(F::GoAway {
            code: ErrorCode::Protocol,
            ..
        })
    ));
}

#[test]
fn reused_ids_are_fatal() {
    let mut s = server();
    feed(&mut s, &raw_data(3, FLAG_SYN, b"")).unwrap();
    assert!(matches!(
        feed(&mut s, &raw_data(3, FLAG_SYN, b"")),
        Err(MuxError::StreamIdReused(3))
    ));
    // reuse after the stream was finished and freed
    let mut s = server();
    feed(&mut s, &raw_data(3, FLAG_SYN | FLAG_FIN, b"")).unwrap();
    let id = s.accept().unwrap();
    s.close_write(id).unwrap();
    s.release(id);
    assert_eq!(s.tracked_streams(), 0);
    assert!(matches!(
        feed(&mut s, &raw_data(3, FLAG_SYN, b"")),
        Err(MuxError::StreamIdReused(3))
    ));
}

#[test]
fn data_without_syn_on_our_unannounced_stream_is_fatal() {
    let mut s = server();
    let id = ready(s.open()).unwrap();
    assert!(matches!(
        feed(&mut s, &raw_data(id, 0, b"x")),
        Err(MuxError::UnannouncedStream(2))
    ));
}

#[test]
fn peer_goaway_ends_the_session() {
    let (mut c, mut s) = (client(), server());
    let id = ready(c.open()).unwrap();
    ready(c.write(id, b"half")).unwrap();
    c.close_write(id).unwrap();
    pump(&mut c, &mut s).unwrap();
    let sid = s.accept().unwrap();
    let other = ready(s.open()).unwrap();
    s.goaway(ErrorCode::None, "maintenance");
    assert!(s.is_ended());
    let frames = parse_all(s.output());
    assert_eq!(
        frames.last(),
        Some(&F::GoAway {
            last: 3,
            code: ErrorCode::None,
            msg: "maintenance".into()
        })
    );
    assert_eq!(s.output().len(), 8 + 8 + "maintenance".len());
    assert!(matches!(s.end_result(), Some(Ok(()))));
    // after our goaway: no more opens or accepts, data already here is readable
    assert!(matches!(
        s.open(),
        Poll::Ready(Err(MuxError::SessionClosed))
    ));
    assert_eq!(s.accept(), None);
    assert_eq!(read_all(&mut s, sid), b"half");
    assert_eq!(
        s.read(other, &mut [0; 4]),
        Poll::Ready(Err(StreamError::SessionClosed))
    );
    pump(&mut s, &mut c).unwrap();
    assert!(c.is_ended());
    assert!(matches!(c.end_result(), Some(Ok(()))));
    assert!(events(&mut c).iter().any(|e| matches!(
        e,
        Event::GoAway {
            code: ErrorCode::None,
            ..
        }
    )));
    assert_eq!(
        c.write(id, b"x"),
        Poll::Ready(Err(StreamError::SessionClosed))
    );
}

#[test]
fn goaway_with_an_error_code_is_an_error_result() {
    let mut c = client();
    let mut v = Vec::new();
    encode_goaway(&mut v, 0, ErrorCode::Internal, b"oops");
    feed(&mut c, &v).unwrap();
    assert!(matches!(
        c.end_result(),
        Some(Err(MuxError::RemoteGoAway {
            code: ErrorCode::Internal,
            ..
        }))
    ));
}

#[test]
fn client_goaway_with_the_rust_length_bug_is_terminal() {
    let mut s = server();
    feed(&mut s, &raw_data(3, FLAG_SYN, b"x")).unwrap();
    // length = len(msg) (13) instead of 8 + 13, as the Rust SDK writes it
    let mut v = vec![0, 0, 13, 0x30, 0, 0, 0, 0];
    v.extend_from_slice(&3u32.to_be_bytes());
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(b"invalid frame");
    v.extend_from_slice(&raw_data(5, FLAG_SYN, b"never parsed"));
    let n = feed(&mut s, &v).unwrap();
    assert_eq!(n, 8 + 13);
    assert!(s.is_ended());
    assert!(matches!(
        s.end_result(),
        Some(Err(MuxError::RemoteGoAway {
            code: ErrorCode::Protocol,
            ..
        }))
    ));
    assert!(matches!(
        feed(&mut s, &v[n..]),
        Err(MuxError::SessionClosed)
    ));
}

#[test]
fn close_drops_queued_output() {
    let mut c = client();
    let id = ready(c.open()).unwrap();
    ready(c.write(id, b"x")).unwrap();
    c.close();
    assert!(c.must_stop_now());
    assert!(!c.has_output());
}

#[test]
fn output_high_water_makes_writes_wait() {
    let mut c = client();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(ready(c.open()).unwrap());
    }
    let chunk = vec![0u8; DEFAULT_WINDOW as usize];
    assert!(ready(c.write(ids[0], &chunk)).is_ok());
    assert!(ready(c.write(ids[1], &chunk)).is_ok());
    assert!(c.output().len() >= OUT_HIGH_WATER);
    assert!(c.write(ids[2], &chunk).is_pending());
    c.take_output();
    assert!(ready(c.write(ids[2], &chunk)).is_ok());
}

#[test]
fn a_peer_that_does_not_read_is_cut_off() {
    let mut s = server();
    let mut junk = Vec::new();
    for _ in 0..(OUT_HARD_LIMIT / 12 + 10) {
        encode_data(&mut junk, 7, 0, b"");
    }
    assert!(matches!(
        feed(&mut s, &junk),
        Err(MuxError::OutputOverflow(_))
    ));
}

#[test]
fn partial_headers_are_not_consumed() {
    let mut s = server();
    let frame = raw_data(3, FLAG_SYN, b"hello");
    assert_eq!(feed(&mut s, &frame[..5]).unwrap(), 0);
    // header complete, payload partial: the payload is taken as it comes
    assert_eq!(feed(&mut s, &frame[..10]).unwrap(), 10);
    assert_eq!(feed(&mut s, &frame[10..]).unwrap(), 3);
    let id = s.accept().unwrap();
    assert_eq!(read_all(&mut s, id), b"hello");
}

#[test]
fn long_goaway_message_from_a_server() {
    let mut c = client();
    let mut v = Vec::new();
    encode_goaway(&mut v, 0, ErrorCode::None, &vec![b'm'; MAX_GOAWAY_MESSAGE]);
    feed(&mut c, &v[..v.len() - 1]).unwrap();
    assert!(!c.is_ended());
    feed(&mut c, &v).unwrap();
    assert!(c.is_ended());
}

// ----- property tests ------------------------------------------------

/// Output bytes, events, how it ended, and what each accepted stream read.
type Observed = (Vec<u8>, Vec<Event>, String, Vec<(u32, Vec<u8>)>);

/// Feeds `bytes` in chunks the way a driver does (keeping unconsumed
/// bytes), then returns everything observable.
fn observe(role: Role, bytes: &[u8], cuts: &[usize]) -> Observed {
    let mut c = Core::new(role, cfg(8, 4));
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut result = String::from("running");
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    bounds.push(bytes.len());
    bounds.sort_unstable();
    for end in bounds {
        if end < at {
            continue;
        }
        pending.extend_from_slice(&bytes[at..end]);
        at = end;
        match c.receive(&pending) {
            Ok(n) => {
                assert!(n <= pending.len());
                pending.drain(..n);
                // never more left over than a control frame
                assert!(pending.len() < 8 + 8 + MAX_GOAWAY_MESSAGE);
            }
            Err(e) => {
                result = format!("error: {e}");
                break;
            }
        }
        if c.is_ended() {
            break;
        }
    }
    if c.is_ended() && result == "running" {
        result = format!("ended: {:?}", c.end_result());
    }
    assert!(c.tracked_streams() <= 8);
    let mut reads = Vec::new();
    while let Some(id) = c.accept() {
        let mut got = Vec::new();
        let mut buf = [0u8; 1000];
        while let Poll::Ready(Ok(n)) = c.read(id, &mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        reads.push((id, got));
    }
    (
        c.take_output(),
        std::iter::from_fn(|| c.poll_event()).collect(),
        result,
        reads,
    )
}

/// A frame a client might plausibly send, on a small id space.
fn arb_client_frame() -> impl Strategy<Value = Vec<u8>> {
    let id = (0u32..6).prop_map(|i| 3 + 2 * i);
    prop_oneof![
        (
            id.clone(),
            0u8..4,
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(id, flags, p)| raw_data(id, flags, &p)),
        (id.clone(), 1u32..100_000).prop_map(|(id, n)| {
            let mut v = Vec::new();
            encode_wndinc(&mut v, id, n);
            v
        }),
        (id, 0u32..20).prop_map(|(id, code)| {
            let mut v = Vec::new();
            encode_rst(&mut v, id, ErrorCode::from_u32(code));
            v
        }),
        Just({
            let mut v = Vec::new();
            encode_goaway(&mut v, 0, ErrorCode::None, b"bye");
            v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for role in [Role::Client, Role::Server] {
            let (out, _, _, _) = observe(role, &bytes, &[]);
            prop_assert!(out.len() <= OUT_HARD_LIMIT + 8 + 8 + MAX_GOAWAY_MESSAGE);
        }
    }

    #[test]
    fn split_feeding_equals_whole_feeding(
        frames in proptest::collection::vec(arb_client_frame(), 0..40),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let bytes: Vec<u8> = frames.concat();
        let whole = observe(Role::Server, &bytes, &[]);
        let split = observe(Role::Server, &bytes, &cuts);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn garbage_split_feeding_equals_whole_feeding(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        for role in [Role::Client, Role::Server] {
            prop_assert_eq!(observe(role, &bytes, &[]), observe(role, &bytes, &cuts));
        }
    }

    /// Two well-behaved cores never hit a session error, and every byte
    /// written on a stream that was not reset arrives in order.
    #[test]
    fn two_cores_agree(ops in proptest::collection::vec((0u8..7, 0usize..4, 0usize..70_000), 0..120)) {
        let mut c = Core::new(Role::Client, cfg(4, 4));
        let mut s = Core::new(Role::Server, cfg(4, 4));
        // (stream id on the writer's side) -> bytes written / read
        let mut sent: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut recv: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut mine: Vec<u32> = Vec::new();
        let mut theirs: Vec<u32> = Vec::new();
        let mut counter = 0u8;
        for (op, which, n) in ops {
            match op {
                0 => if let Poll::Ready(Ok(id)) = c.open() { mine.push(id) },
                1 => if let Some(&id) = mine.get(which) {
                    let data: Vec<u8> = (0..n).map(|_| { counter = counter.wrapping_add(1); counter }).collect();
                    if let Poll::Ready(Ok(k)) = c.write(id, &data) {
                        sent.entry(id).or_default().extend_from_slice(&data[..k]);
                    }
                },
                2 => if let Some(&id) = theirs.get(which) {
                    let mut buf = vec![0u8; n.max(1)];
                    if let Poll::Ready(Ok(k)) = s.read(id, &mut buf) {
                        recv.entry(id).or_default().extend_from_slice(&buf[..k]);
                    }
                },
                3 => if let Some(&id) = mine.get(which) { let _ = c.close_write(id); },
                4 => if n % 5 == 0 { if let Some(&id) = mine.get(which) { c.reset(id, ErrorCode::StreamCancelled); } },
                5 => if let Some(&id) = theirs.get(which) { let _ = s.close_write(id); },
                _ => if n % 3 == 0 && !mine.is_empty() {
                    let id = mine.remove(which % mine.len());
                    c.release(id);
                    sent.remove(&id);
                },
            }
            pump(&mut c, &mut s).unwrap();
            pump(&mut s, &mut c).unwrap();
            while let Some(id) = s.accept() { theirs.push(id); }
        }
        prop_assert!(!c.is_ended() && !s.is_ended());
        for (id, data) in &sent {
            let got = recv.get(id).map(Vec::as_slice).unwrap_or(&[]);
            if !matches!(s.read(*id, &mut [0; 1]), Poll::Ready(Err(_))) {
                prop_assert!(data.starts_with(got), "stream {} out of order", id);
            }
        }
        prop_assert!(c.open_streams() <= 4 && s.open_streams() <= 4);
    }
}
