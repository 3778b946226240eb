//! Schema evolution, the way a user does it: the same message in three
//! versions, and bytes of each read by the others.
//!
//! * `V1`: the first release of `Record`.
//! * `V2`: adds fields with new ordinals (a number, a text, an
//!   `Option<u32>`, a nested struct, a list, a number with a default).
//! * `V3`: removes V2's `count` and keeps its slot with
//!   `#[capnp(retired(3: u32))]`.
//!
//! All three are the Cap'n Proto struct `Record` (`#[capnp(name)]`), so
//! they also have the same type id. Then an enum and a union that gain a
//! member: old readers get a typed error, never a panic.

#![allow(clippy::float_cmp)] // Values are copied bit for bit, never computed.

use std::collections::BTreeMap;

use taskgraph::message::{Frame, Message};
use taskgraph::{DecodeErrorKind, Error};
use taskgraph_tests::capnp_tool::{compile_to_capnp, TempDir};

// ---------------------------------------------------------------------------
// A struct that grows.

#[derive(Message, Debug, Clone, PartialEq, Default)]
#[capnp(name = "Record")]
pub struct V1 {
    #[capnp(ordinal = 0)]
    pub id: u64,
    #[capnp(ordinal = 1)]
    pub name: String,
    #[capnp(ordinal = 2)]
    pub score: f32,
}

/// A struct that V2 nests.
#[derive(Message, Debug, Clone, PartialEq, Default)]
pub struct Meta {
    #[capnp(ordinal = 0)]
    pub level: u16,
    #[capnp(ordinal = 1)]
    pub owner: String,
}

#[derive(Message, Debug, Clone, PartialEq, Default)]
#[capnp(name = "Record")]
pub struct V2 {
    #[capnp(ordinal = 0)]
    pub id: u64,
    #[capnp(ordinal = 1)]
    pub name: String,
    #[capnp(ordinal = 2)]
    pub score: f32,
    // New in V2.
    #[capnp(ordinal = 3)]
    pub count: u32,
    #[capnp(ordinal = 4)]
    pub note: String,
    /// Ordinals 5 (none) and 6 (some).
    #[capnp(ordinal = 5)]
    pub limit: Option<u32>,
    #[capnp(ordinal = 7)]
    pub meta: Meta,
    #[capnp(ordinal = 8)]
    pub tags: Vec<String>,
    #[capnp(ordinal = 9, default = 7)]
    pub retries: u8,
    #[capnp(ordinal = 10)]
    pub seq: u64,
}

/// V2 without `count`: its ordinal and its space stay reserved.
#[derive(Message, Debug, Clone, PartialEq, Default)]
#[capnp(name = "Record", retired(3: u32))]
pub struct V3 {
    #[capnp(ordinal = 0)]
    pub id: u64,
    #[capnp(ordinal = 1)]
    pub name: String,
    #[capnp(ordinal = 2)]
    pub score: f32,
    #[capnp(ordinal = 4)]
    pub note: String,
    #[capnp(ordinal = 5)]
    pub limit: Option<u32>,
    #[capnp(ordinal = 7)]
    pub meta: Meta,
    #[capnp(ordinal = 8)]
    pub tags: Vec<String>,
    #[capnp(ordinal = 9, default = 7)]
    pub retries: u8,
    #[capnp(ordinal = 10)]
    pub seq: u64,
}

fn v1() -> V1 {
    V1 { id: 0x0102_0304_0506_0708, name: "first".into(), score: 0.75 }
}

fn v2() -> V2 {
    V2 {
        id: 42,
        name: "second".into(),
        score: -3.5,
        count: 0xdead_beef,
        note: "a note".into(),
        limit: Some(1000),
        meta: Meta { level: 3, owner: "ops".into() },
        tags: vec!["x".into(), "yy".into()],
        retries: 0,
        seq: u64::MAX,
    }
}

#[test]
fn v1_bytes_read_by_v2_get_defaults() {
    let old = v1();
    let new = V2::decode(&old.encode()).unwrap();
    assert_eq!(
        new,
        V2 {
            id: old.id,
            name: old.name.clone(),
            score: old.score,
            count: 0,
            note: String::new(),
            limit: None,
            meta: Meta::default(),
            tags: vec![],
            retries: 7, // the declared default, not 0
            seq: 0,
        }
    );
    // The borrowed view agrees.
    let bytes = old.encode();
    let frame = Frame::<V2>::new(&bytes).unwrap();
    let view = frame.view().unwrap();
    assert_eq!(view.limit().unwrap(), None);
    assert_eq!(view.retries(), 7);
    assert_eq!(view.note().unwrap(), "");
    assert_eq!(view.tags().unwrap().len(), 0);
}

#[test]
fn v2_bytes_read_by_v1_skip_new_fields() {
    let new = v2();
    let old = V1::decode(&new.encode()).unwrap();
    assert_eq!(old, V1 { id: new.id, name: new.name.clone(), score: new.score });
    // V1 re-encodes what it knows; V2 then sees its new fields as unset.
    let round = V2::decode(&old.encode()).unwrap();
    assert_eq!((round.id, round.name.as_str(), round.score), (42, "second", -3.5));
    assert_eq!((round.count, round.limit, round.retries), (0, None, 7));
}

#[test]
fn v2_bytes_read_by_v3_skip_the_retired_field() {
    let new = v2();
    let v3 = V3::decode(&new.encode()).unwrap();
    assert_eq!(
        v3,
        V3 {
            id: new.id,
            name: new.name.clone(),
            score: new.score,
            note: new.note.clone(),
            limit: new.limit,
            meta: new.meta.clone(),
            tags: new.tags.clone(),
            retries: new.retries,
            seq: new.seq,
        }
    );
}

#[test]
fn v3_bytes_read_by_v2_see_the_retired_field_unset() {
    let v3 = V3 {
        id: 9,
        name: "third".into(),
        score: 1.0,
        note: "n".into(),
        limit: Some(0),
        meta: Meta { level: u16::MAX, owner: String::new() },
        tags: vec![String::new()],
        retries: 255,
        seq: 12,
    };
    let v2 = V2::decode(&v3.encode()).unwrap();
    assert_eq!(
        v2,
        V2 {
            id: 9,
            name: "third".into(),
            score: 1.0,
            count: 0, // nobody writes a retired field
            note: "n".into(),
            limit: Some(0),
            meta: Meta { level: u16::MAX, owner: String::new() },
            tags: vec![String::new()],
            retries: 255,
            seq: 12,
        }
    );
    // And V1 still reads V3.
    assert_eq!(V1::decode(&v3.encode()).unwrap(), V1 { id: 9, name: "third".into(), score: 1.0 });
}

#[test]
fn retired_slot_keeps_later_fields_in_place() {
    // `limit`, `retries` and `seq` are data fields laid out after `count`:
    // had V3 dropped the slot, they would move into its 32 bits. Every bit
    // pattern survives V2 → V3 → V2 except `count` itself.
    for (limit, retries, seq) in [(Some(u32::MAX), 1, 1), (None, 0, u64::MAX), (Some(1), 7, 0x8000_0000_0000_0001)] {
        let original = V2 { limit, retries, seq, ..v2() };
        let through_v3 = V2::decode(&V3::decode(&original.encode()).unwrap().encode()).unwrap();
        assert_eq!(through_v3, V2 { count: 0, ..original });
    }
    // The data section is the same size in both versions, so the wire
    // size is too.
    let v3 = V3::decode(&v2().encode()).unwrap();
    assert_eq!(v3.encode().len(), v2().encode().len());
}

// ---------------------------------------------------------------------------
// The layouts, as the official compiler sees them.

/// The layout of struct `name` in `capnp compile -ocapnp` output: its
/// section sizes, and for each ordinal the type and location, e.g.
/// `3 → (":UInt32", "bits[96, 128)")`; the `k`-th union's tag (from 1) is
/// under key `u32::MAX - k`, e.g. `("union", "tag bits [128, 144)")`.
fn layout_of(compiled: &str, name: &str) -> (String, BTreeMap<u32, (String, String)>) {
    let mut lines = compiled.lines().skip_while(|l| !l.starts_with(&format!("struct {name} ")));
    let header = lines.next().unwrap_or_else(|| panic!("no struct {name} in:\n{compiled}"));
    let size = header.split_once('#').map(|(_, s)| s.trim().to_owned()).unwrap_or_default();
    let mut fields = BTreeMap::new();
    let mut unions = 0;
    for line in lines.take_while(|l| !l.starts_with('}')) {
        let Some((decl, comment)) = line.split_once('#') else { continue };
        if decl.trim() == "union {" {
            unions += 1;
            fields.insert(u32::MAX - unions, ("union".to_owned(), comment.trim().to_owned()));
            continue;
        }
        let Some((_, rest)) = decl.split_once('@') else { continue };
        let mut parts = rest.split_whitespace();
        let ordinal: u32 = parts.next().unwrap().parse().unwrap();
        let ty = parts.next().unwrap_or("").trim_end_matches(';').to_owned();
        let location = comment.split(", union tag").next().unwrap().trim().to_owned();
        fields.insert(ordinal, (ty, location));
    }
    (size, fields)
}

#[test]
fn retired_slot_keeps_layout_per_capnp() {
    let dir = TempDir::new("evolution-layout");
    let v2_out = compile_to_capnp(dir.path(), "v2.capnp", &V2::capnp_schema());
    let v3_out = compile_to_capnp(dir.path(), "v3.capnp", &V3::capnp_schema());
    let (v2_size, v2_fields) = layout_of(&v2_out, "Record");
    let (v3_size, v3_fields) = layout_of(&v3_out, "Record");
    assert_eq!(v2_size, v3_size, "section sizes differ:\n{v2_out}\n{v3_out}");
    assert_eq!(v2_fields.len(), 12, "V2 has ordinals 0..=10 and one union:\n{v2_out}");
    // Every ordinal, the retired one included, is at the same place with
    // the same type.
    assert_eq!(v2_fields, v3_fields, "layouts differ:\n--- V2 ---\n{v2_out}\n--- V3 ---\n{v3_out}");
    // The retired field is declared, under a name nobody uses.
    assert!(V3::capnp_schema().contains("@3 :UInt32"), "{}", V3::capnp_schema());
    // And V1's fields are where V2 has them.
    let v1_out = compile_to_capnp(dir.path(), "v1.capnp", &V1::capnp_schema());
    let (_, v1_fields) = layout_of(&v1_out, "Record");
    for (ordinal, place) in &v1_fields {
        assert_eq!(Some(place), v2_fields.get(ordinal), "ordinal {ordinal} moved from V1 to V2");
    }
}

#[test]
fn versions_share_the_type_id() {
    let id = |schema: String| {
        let line = schema.lines().find(|l| l.starts_with("struct Record ")).expect("struct Record").to_owned();
        line.split_whitespace().nth(2).expect("id").to_owned()
    };
    assert_eq!(id(V1::capnp_schema()), id(V2::capnp_schema()));
    assert_eq!(id(V2::capnp_schema()), id(V3::capnp_schema()));
}

// ---------------------------------------------------------------------------
// An enum that gains an enumerant.

#[derive(Message, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[capnp(name = "Level")]
pub enum LevelV1 {
    #[default]
    Low = 0,
    High = 1,
}

#[derive(Message, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[capnp(name = "Level")]
pub enum LevelV2 {
    #[default]
    Low = 0,
    High = 1,
    Critical = 2,
}

#[derive(Message, Debug, Clone, PartialEq, Default)]
#[capnp(name = "Alert")]
pub struct AlertV1 {
    #[capnp(ordinal = 0, enum)]
    pub level: LevelV1,
    #[capnp(ordinal = 1)]
    pub text: String,
    #[capnp(ordinal = 2, enum)]
    pub history: Vec<LevelV1>,
    #[capnp(ordinal = 3, enum)]
    pub worst: Option<LevelV1>,
}

#[derive(Message, Debug, Clone, PartialEq, Default)]
#[capnp(name = "Alert")]
pub struct AlertV2 {
    #[capnp(ordinal = 0, enum)]
    pub level: LevelV2,
    #[capnp(ordinal = 1)]
    pub text: String,
    #[capnp(ordinal = 2, enum)]
    pub history: Vec<LevelV2>,
    #[capnp(ordinal = 3, enum)]
    pub worst: Option<LevelV2>,
}

/// Asserts `result` is a decode error of kind `Unknown`, and returns its
/// message.
#[track_caller]
fn expect_unknown<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Err(Error::Decode(e)) => {
            assert_eq!(e.kind, DecodeErrorKind::Unknown, "wrong kind: {e}");
            e.to_string()
        }
        Err(other) => panic!("expected a decode error, got {other:?}"),
        Ok(v) => panic!("expected an Unknown error, decoded {v:?}"),
    }
}

#[test]
fn known_enumerants_cross_versions() {
    let new = AlertV2 {
        level: LevelV2::High,
        text: "t".into(),
        history: vec![LevelV2::Low, LevelV2::High],
        worst: Some(LevelV2::High),
    };
    let old = AlertV1::decode(&new.encode()).unwrap();
    assert_eq!(
        old,
        AlertV1 { level: LevelV1::High, text: "t".into(), history: vec![LevelV1::Low, LevelV1::High], worst: Some(LevelV1::High) }
    );
    assert_eq!(AlertV2::decode(&old.encode()).unwrap(), new);
}

#[test]
fn new_enumerant_is_a_typed_error_for_old_readers() {
    let base = AlertV2 { level: LevelV2::Low, text: "t".into(), history: vec![LevelV2::Low], worst: None };
    // The enum field itself.
    let msg = expect_unknown(AlertV1::decode(&AlertV2 { level: LevelV2::Critical, ..base.clone() }.encode()));
    assert!(msg.contains('2'), "the error names the unknown value: {msg}");
    // An element of a list of enums.
    expect_unknown(AlertV1::decode(
        &AlertV2 { history: vec![LevelV2::High, LevelV2::Critical], ..base.clone() }.encode(),
    ));
    // The `some` of an Option of an enum.
    expect_unknown(AlertV1::decode(&AlertV2 { worst: Some(LevelV2::Critical), ..base.clone() }.encode()));
    // The view reports it too, on the field that holds it, and reads the
    // other fields.
    let bytes = AlertV2 { level: LevelV2::Critical, ..base.clone() }.encode();
    let frame = Frame::<AlertV1>::new(&bytes).unwrap();
    let view = frame.view().unwrap();
    expect_unknown(view.level());
    assert_eq!(view.text().unwrap(), "t");
    // The new reader reads everything.
    let all = AlertV2 {
        level: LevelV2::Critical,
        text: String::new(),
        history: vec![LevelV2::Critical],
        worst: Some(LevelV2::Critical),
    };
    assert_eq!(AlertV2::decode(&all.encode()).unwrap(), all);
}

// ---------------------------------------------------------------------------
// A union (enum with data) that gains a variant.

#[derive(Message, Debug, Clone, PartialEq)]
#[capnp(name = "Event")]
pub enum EventV1 {
    #[capnp(ordinal = 0)]
    Start,
    #[capnp(ordinal = 1)]
    Stop(u32),
}

#[derive(Message, Debug, Clone, PartialEq)]
#[capnp(name = "Event")]
pub enum EventV2 {
    #[capnp(ordinal = 0)]
    Start,
    #[capnp(ordinal = 1)]
    Stop(u32),
    Pause {
        #[capnp(ordinal = 2)]
        secs: f32,
        #[capnp(ordinal = 3)]
        why: String,
    },
}

#[derive(Message, Debug, Clone, PartialEq)]
#[capnp(name = "Log")]
pub struct LogV1 {
    #[capnp(ordinal = 0)]
    pub seq: u64,
    #[capnp(ordinal = 1)]
    pub event: EventV1,
    #[capnp(ordinal = 2)]
    pub events: Vec<EventV1>,
}

#[derive(Message, Debug, Clone, PartialEq)]
#[capnp(name = "Log")]
pub struct LogV2 {
    #[capnp(ordinal = 0)]
    pub seq: u64,
    #[capnp(ordinal = 1)]
    pub event: EventV2,
    #[capnp(ordinal = 2)]
    pub events: Vec<EventV2>,
}

#[test]
fn known_variants_cross_versions() {
    for (new, old) in [(EventV2::Start, EventV1::Start), (EventV2::Stop(77), EventV1::Stop(77))] {
        assert_eq!(EventV1::decode(&new.encode()).unwrap(), old);
        assert_eq!(EventV2::decode(&old.encode()).unwrap(), new);
    }
    let log = LogV1 { seq: 1, event: EventV1::Stop(3), events: vec![EventV1::Start, EventV1::Stop(4)] };
    assert_eq!(
        LogV2::decode(&log.encode()).unwrap(),
        LogV2 { seq: 1, event: EventV2::Stop(3), events: vec![EventV2::Start, EventV2::Stop(4)] }
    );
}

#[test]
fn new_variant_is_a_typed_error_for_old_readers() {
    let pause = EventV2::Pause { secs: 1.5, why: "lunch".into() };
    // As the root.
    let msg = expect_unknown(EventV1::decode(&pause.encode()));
    assert!(msg.contains('2'), "the error names the unknown member: {msg}");
    // As a field, and in a list.
    let log = LogV2 { seq: 5, event: pause.clone(), events: vec![] };
    expect_unknown(LogV1::decode(&log.encode()));
    let log = LogV2 { seq: 5, event: EventV2::Start, events: vec![EventV2::Stop(1), pause.clone()] };
    expect_unknown(LogV1::decode(&log.encode()));
    // The view of the outer struct still reads the known parts.
    let bytes = LogV2 { seq: 5, event: pause.clone(), events: vec![] }.encode();
    let frame = Frame::<LogV1>::new(&bytes).unwrap();
    let view = frame.view().unwrap();
    assert_eq!(view.seq(), 5);
    expect_unknown(view.event().unwrap().decode());
    // The new reader reads it.
    assert_eq!(EventV2::decode(&pause.encode()).unwrap(), pause);
}
