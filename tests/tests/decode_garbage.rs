//! Decoding never panics: arbitrary bytes, damaged valid frames, every
//! truncation, nesting bombs and oversized frames all give typed errors.
//! (A bounded run; `fuzz/` has the open-ended cargo-fuzz target.)

use proptest::prelude::*;
use taskgraph::message::{Frame, Limits, Message};
use taskgraph::{DecodeErrorKind, Error};
use taskgraph_tests::{decode_everything, Everything, Tensor, Tree};

fn kind(r: Result<impl std::fmt::Debug, Error>) -> DecodeErrorKind {
    match r {
        Err(Error::Decode(e)) => e.kind,
        other => panic!("expected a decode error, got {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    #[test]
    fn damaged_frames(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = Everything::sample().encode();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        decode_everything(&bytes);
    }

    #[test]
    fn garbage_after_a_valid_table(words in proptest::collection::vec(any::<u64>(), 0..64)) {
        // A plausible one-segment table, then random words.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&(words.len() as u32).to_le_bytes());
        for w in &words {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        decode_everything(&bytes);
    }
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = Everything::sample().encode();
    for len in 0..bytes.len() {
        assert!(Everything::decode(&bytes[..len]).is_err(), "decoded a frame cut to {len} bytes");
    }
    assert_eq!(kind(Everything::decode(&[])), DecodeErrorKind::Truncated);
    assert_eq!(kind(Everything::decode(&bytes[..bytes.len() - 8])), DecodeErrorKind::Truncated);
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut bytes = Tensor { step: 1, values: vec![1.0] }.encode();
    bytes.extend_from_slice(&[0; 8]);
    assert_eq!(kind(Tensor::decode(&bytes)), DecodeErrorKind::TrailingBytes);
}

#[test]
fn oversized_frames_are_refused_before_reading() {
    let t = Tensor { step: 1, values: vec![0.5; 1 << 16] };
    let bytes = t.encode();
    assert_eq!(kind(Tensor::decode_with(&bytes, &Limits::max_bytes(1 << 16))), DecodeErrorKind::TooLarge);
    assert_eq!(Tensor::decode_with(&bytes, &Limits::max_bytes(1 << 20)).unwrap(), t);
}

#[test]
fn a_segment_table_that_claims_too_much_is_an_error() {
    // One segment of 2^31 words, and nothing behind it.
    let mut bytes = 0u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&(1u32 << 31).to_le_bytes());
    let k = kind(Tensor::decode(&bytes));
    assert!(matches!(k, DecodeErrorKind::TooLarge | DecodeErrorKind::Truncated), "{k:?}");
    // 2^20 segments.
    let mut bytes = ((1u32 << 20) - 1).to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0; 64]);
    assert!(Tensor::decode(&bytes).is_err());
}

#[test]
fn nesting_bombs_are_refused() {
    let deep = Tree::chain(100).encode();
    let err = Tree::decode(&deep).unwrap_err();
    assert!(err.to_string().starts_with("cannot decode taskgraph_tests::Tree: the message is nested too deeply"), "{err}");
    assert!(err.to_string().len() < 400, "the path is elided: {err}");
    assert_eq!(kind(Tree::decode(&deep)), DecodeErrorKind::TooDeep);
    // Each level is a struct and a list: 100 levels nest 200 deep.
    let limits = Limits { max_depth: 202, ..Limits::default() };
    assert_eq!(Tree::decode_with(&deep, &limits).unwrap(), Tree::chain(100));
    // Within the default limit.
    assert_eq!(Tree::decode(&Tree::chain(30).encode()).unwrap(), Tree::chain(30));
}

#[test]
fn unaligned_input_is_read_correctly() {
    let t = Tensor { step: 9, values: (0..100).map(|i| i as f32).collect() };
    let bytes = t.encode();
    let mut shifted = vec![0u8; bytes.len() + 1];
    shifted[1..].copy_from_slice(&bytes);
    assert_eq!(Tensor::decode(&shifted[1..]).unwrap(), t);
    let frame = Frame::<Tensor>::new(&shifted[1..]).unwrap();
    assert_eq!(frame.view().unwrap().values().unwrap().to_vec(), t.values);
}

#[test]
fn errors_say_where() {
    // A text field holding invalid UTF-8: patch the sample's text bytes.
    let e = Everything::sample();
    let mut bytes = e.encode();
    let needle = "héllo".as_bytes();
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("text is in the frame");
    bytes[at] = 0xff;
    let err = Everything::decode(&bytes).unwrap_err();
    let Error::Decode(d) = &err else { panic!("{err:?}") };
    assert_eq!(d.kind, DecodeErrorKind::Utf8);
    assert!(err.to_string().contains("Everything.text"), "{err}");
}
