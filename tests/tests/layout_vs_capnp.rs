//! Property test: our layout engine against the official `capnp` compiler.
//!
//! Generates many random struct shapes (seeded, so every run sees the same
//! ones), writes them into one `.capnp` file, compiles it with
//! `capnp compile -o-`, reads the `CodeGeneratorRequest` with
//! `capnp::schema_capnp`, and compares every field offset, every union's
//! discriminant offset and values, and the section sizes with
//! `taskgraph_codegen::layout::compute`. Also checks the struct and group
//! type ids against `taskgraph_codegen::ids`.
//!
//! `LAYOUT_ITERS=N` sets the number of structs (default 400),
//! `LAYOUT_SEED=N` the seed. Needs the `capnp` binary on `PATH` (Debian
//! package `capnproto`); without it the test fails, it never skips.

use std::collections::HashMap;
use std::fmt::Write as _;

use capnp::message::ReaderOptions;
use capnp::schema_capnp::{field, node};
use taskgraph_codegen::ids;
use taskgraph_codegen::layout::{self, Layout, Member, SlotKind, StructShape};
use taskgraph_tests::capnp_tool::{compile_to_request, TempDir};

const FILE_ID: u64 = 0xd1a2_b3c4_d5e6_f708;
const DEFAULT_ITERS: usize = 400;
const DEFAULT_SEED: u64 = 0x7a5c_6e2f_0b1d_4c39;

// ---------------------------------------------------------------------------
// Deterministic randomness (SplitMix64).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability `percent`%.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------
// Random declarations.

/// A declaration as written in the `.capnp` file.
#[derive(Debug)]
enum Decl {
    Field {
        name: String,
        ordinal: u32,
        ty: &'static str,
        kind: SlotKind,
    },
    Group {
        name: String,
        members: Vec<Decl>,
    },
    /// `name: None` is an unnamed `union { ... }`.
    Union {
        name: Option<String>,
        members: Vec<Decl>,
    },
}

const POINTER_TYPES: &[&str] =
    &["Text", "Data", "List(UInt32)", "List(Bool)", "List(Text)", "AnyPointer", "P", "List(P)"];

struct Generator {
    rng: Rng,
    /// Per-struct counter for unique member names.
    next_name: usize,
    /// Fields of the current struct, to number afterwards.
    field_count: u32,
}

impl Generator {
    fn name(&mut self, prefix: &str) -> String {
        self.next_name += 1;
        format!("{prefix}{}", self.next_name - 1)
    }

    fn field(&mut self) -> Decl {
        let (ty, kind) = match self.rng.below(100) {
            0..=7 => ("Void", SlotKind::Void),
            8..=19 => ("Bool", SlotKind::Data(0)),
            20..=31 => (self.rng.pick(&["UInt8", "Int8"]), SlotKind::Data(3)),
            32..=45 => (self.rng.pick(&["UInt16", "Int16", "E"]), SlotKind::Data(4)),
            46..=59 => (self.rng.pick(&["UInt32", "Int32", "Float32"]), SlotKind::Data(5)),
            60..=73 => (self.rng.pick(&["UInt64", "Int64", "Float64"]), SlotKind::Data(6)),
            _ => (self.rng.pick(POINTER_TYPES), SlotKind::Pointer),
        };
        self.field_count += 1;
        // The ordinal is assigned once the whole struct exists.
        Decl::Field { name: self.name("f"), ordinal: u32::MAX, ty, kind }
    }

    /// Members of the struct or of a plain group (not inside any union):
    /// fields, plain groups, at most one unnamed union, named unions.
    fn scope(&mut self, min: usize, max: usize, depth: usize) -> Vec<Decl> {
        let count = min + self.rng.below(max - min + 1);
        let mut members = Vec::with_capacity(count);
        let mut has_unnamed_union = false;
        for _ in 0..count {
            let roll = self.rng.below(100);
            let member = if depth >= 3 || roll < 62 {
                self.field()
            } else if roll < 74 {
                let name = self.name("g");
                Decl::Group { name, members: self.scope(1, 4, depth + 1) }
            } else if roll < 88 && !has_unnamed_union {
                has_unnamed_union = true;
                Decl::Union { name: None, members: self.union_members(depth + 1) }
            } else {
                let name = self.name("u");
                Decl::Union { name: Some(name), members: self.union_members(depth + 1) }
            };
            members.push(member);
        }
        members
    }

    /// Members of a union: fields and groups (which hold no unions).
    fn union_members(&mut self, depth: usize) -> Vec<Decl> {
        let count = 2 + self.rng.below(4);
        (0..count)
            .map(|_| {
                if self.rng.chance(50) {
                    self.field()
                } else {
                    let name = self.name("g");
                    Decl::Group { name, members: self.union_group(depth + 1) }
                }
            })
            .collect()
    }

    /// Members of a group inside a union member: fields and plain groups.
    fn union_group(&mut self, depth: usize) -> Vec<Decl> {
        self.union_group_sized(depth, 1, 4)
    }

    fn union_group_sized(&mut self, depth: usize, min: usize, max: usize) -> Vec<Decl> {
        let count = min + self.rng.below(max - min + 1);
        (0..count)
            .map(|_| {
                if depth < 4 && self.rng.chance(15) {
                    let name = self.name("g");
                    Decl::Group { name, members: self.union_group(depth + 1) }
                } else {
                    self.field()
                }
            })
            .collect()
    }

    /// A union whose members are mostly groups with many fields: the
    /// members then share several data blocks, which exercises the
    /// smallest-fit choice between blocks and growing blocks in place.
    fn heavy_union(&mut self) -> Decl {
        let count = 3 + self.rng.below(4);
        let members = (0..count)
            .map(|_| {
                if self.rng.chance(15) {
                    self.field()
                } else {
                    let name = self.name("g");
                    Decl::Group { name, members: self.union_group_sized(1, 2, 7) }
                }
            })
            .collect();
        Decl::Union { name: Some(self.name("u")), members }
    }

    fn structure(&mut self) -> Vec<Decl> {
        self.next_name = 0;
        self.field_count = 0;
        let max = self.rng.pick(&[3, 8, 14, 24]);
        let mut members = if self.rng.chance(30) {
            let mut members = self.scope(0, 3, 0);
            let at = self.rng.below(members.len() + 1);
            let union = self.heavy_union();
            members.insert(at, union);
            members
        } else {
            self.scope(0, max, 0)
        };

        // Ordinals: declaration order, fully shuffled, or nearly in order.
        let n = self.field_count as usize;
        let mut ordinals: Vec<u32> = (0..self.field_count).collect();
        match self.rng.below(10) {
            0..=1 => {}
            2..=6 => {
                for i in (1..n).rev() {
                    ordinals.swap(i, self.rng.below(i + 1));
                }
            }
            _ => {
                for _ in 0..n / 3 + 1 {
                    if n >= 2 {
                        let i = self.rng.below(n - 1);
                        ordinals.swap(i, i + 1);
                    }
                }
            }
        }
        let mut next = ordinals.into_iter();
        assign_ordinals(&mut members, &mut next);
        members
    }
}

fn assign_ordinals(decls: &mut [Decl], ordinals: &mut impl Iterator<Item = u32>) {
    for decl in decls {
        match decl {
            Decl::Field { ordinal, .. } => *ordinal = ordinals.next().expect("one per field"),
            Decl::Group { members, .. } | Decl::Union { members, .. } => {
                assign_ordinals(members, ordinals)
            }
        }
    }
}

fn to_member(decl: &Decl) -> Member {
    match decl {
        Decl::Field { ordinal, kind, .. } => {
            Member::Field(layout::Field { ordinal: *ordinal, kind: *kind })
        }
        Decl::Group { members, .. } => Member::Group(members.iter().map(to_member).collect()),
        Decl::Union { members, .. } => {
            Member::Union(layout::Union { members: members.iter().map(to_member).collect() })
        }
    }
}

fn write_decls(out: &mut String, decls: &[Decl], indent: usize) {
    let pad = "  ".repeat(indent);
    for decl in decls {
        match decl {
            Decl::Field { name, ordinal, ty, .. } => {
                writeln!(out, "{pad}{name} @{ordinal} :{ty};").unwrap();
            }
            Decl::Group { name, members } => {
                writeln!(out, "{pad}{name} :group {{").unwrap();
                write_decls(out, members, indent + 1);
                writeln!(out, "{pad}}}").unwrap();
            }
            Decl::Union { name, members } => {
                match name {
                    Some(name) => writeln!(out, "{pad}{name} :union {{").unwrap(),
                    None => writeln!(out, "{pad}union {{").unwrap(),
                }
                write_decls(out, members, indent + 1);
                writeln!(out, "{pad}}}").unwrap();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// What capnp decided.

/// The layout as read from the compiler's output, in the same pre-order as
/// [`Layout`], with field names for messages.
#[derive(Default)]
struct Observed {
    fields: Vec<(String, u32)>,
    /// Discriminant offset and, per member in declaration order, its name
    /// and discriminant value.
    unions: Vec<(u32, Vec<(String, u16)>)>,
}

struct Schema<'a> {
    nodes: HashMap<u64, node::Reader<'a>>,
}

/// The struct part of a struct (or group) node.
fn struct_of(node: node::Reader<'_>) -> Result<node::struct_::Reader<'_>, String> {
    match node.which().map_err(|e| e.to_string())? {
        node::Struct(s) => Ok(s),
        _ => Err(format!("node {:#x} is not a struct", node.get_id())),
    }
}

impl<'a> Schema<'a> {
    fn node(&self, id: u64) -> Result<node::Reader<'a>, String> {
        self.nodes.get(&id).copied().ok_or_else(|| format!("no node @{id:#x} in the output"))
    }

    fn field(node: node::Reader<'a>, name: &str) -> Result<field::Reader<'a>, String> {
        let fields = struct_of(node)?.get_fields().map_err(|e| e.to_string())?;
        fields
            .iter()
            .find(|f| f.get_name().ok().and_then(|n| n.to_str().ok()) == Some(name))
            .ok_or_else(|| format!("no member `{name}` in the output"))
    }

    fn group_node(&self, node: node::Reader<'a>, name: &str) -> Result<node::Reader<'a>, String> {
        match Self::field(node, name)?.which().map_err(|e| e.to_string())? {
            field::Group(g) => self.node(g.get_type_id()),
            field::Slot(_) => Err(format!("`{name}` is not a group in the output")),
        }
    }

    fn slot_offset(node: node::Reader<'a>, name: &str) -> Result<u32, String> {
        match Self::field(node, name)?.which().map_err(|e| e.to_string())? {
            field::Slot(s) => Ok(s.get_offset()),
            field::Group(_) => Err(format!("`{name}` is a group in the output")),
        }
    }

    /// Walks `decls` (the members of `node`) in pre-order.
    fn observe(
        &self,
        decls: &[Decl],
        node: node::Reader<'a>,
        out: &mut Observed,
    ) -> Result<(), String> {
        for decl in decls {
            match decl {
                Decl::Field { name, .. } => {
                    out.fields.push((name.clone(), Self::slot_offset(node, name)?))
                }
                Decl::Group { name, members } => {
                    self.observe(members, self.group_node(node, name)?, out)?
                }
                Decl::Union { name, members } => {
                    let owner = match name {
                        Some(name) => self.group_node(node, name)?,
                        None => node,
                    };
                    let st = struct_of(owner)?;
                    let mut codes = Vec::new();
                    for member in members {
                        let (Decl::Field { name, .. } | Decl::Group { name, .. }) = member else {
                            return Err("a union in a union".into());
                        };
                        codes.push((
                            name.clone(),
                            Self::field(owner, name)?.get_discriminant_value(),
                        ));
                    }
                    out.unions.push((st.get_discriminant_offset(), codes));
                    self.observe(members, owner, out)?;
                }
            }
        }
        Ok(())
    }

    /// Every group member at index `i` of a node's field list has the id
    /// `group_id(node id, i)`; recursively.
    fn check_group_ids(&self, node: node::Reader<'a>) -> Result<(), String> {
        let fields = struct_of(node)?.get_fields().map_err(|e| e.to_string())?;
        for (i, f) in fields.iter().enumerate() {
            if let field::Group(g) = f.which().map_err(|e| e.to_string())? {
                let ours = ids::group_id(node.get_id(), i as u16);
                if ours != g.get_type_id() {
                    return Err(format!(
                        "group `{}`: capnp id {:#x}, ids::group_id {ours:#x}",
                        f.get_name().ok().and_then(|n| n.to_str().ok()).unwrap_or("?"),
                        g.get_type_id()
                    ));
                }
                self.check_group_ids(self.node(g.get_type_id())?)?;
            }
        }
        Ok(())
    }
}

/// Compares our layout with capnp's; the first difference, if any.
fn compare(ours: &Layout, theirs: &Observed, data_words: u16, pointers: u16) -> Result<(), String> {
    if (ours.data_words, ours.pointers) != (data_words, pointers) {
        return Err(format!(
            "section sizes: capnp {data_words} words, {pointers} pointers; ours {} words, {} pointers",
            ours.data_words, ours.pointers
        ));
    }
    if ours.fields.len() != theirs.fields.len() || ours.unions.len() != theirs.unions.len() {
        return Err(format!(
            "shape: capnp {} fields, {} unions; ours {} fields, {} unions",
            theirs.fields.len(),
            theirs.unions.len(),
            ours.fields.len(),
            ours.unions.len()
        ));
    }
    for ((name, offset), ours) in theirs.fields.iter().zip(&ours.fields) {
        if offset != ours {
            return Err(format!("field `{name}`: capnp offset {offset}, ours {ours}"));
        }
    }
    for (i, ((offset, codes), ours)) in theirs.unions.iter().zip(&ours.unions).enumerate() {
        if *offset != ours.discriminant_offset {
            return Err(format!(
                "union #{i} (pre-order): capnp discriminant offset {offset}, ours {}",
                ours.discriminant_offset
            ));
        }
        for ((name, code), ours) in codes.iter().zip(&ours.member_codes) {
            if code != ours {
                return Err(format!(
                    "union #{i} member `{name}`: capnp discriminant value {code}, ours {ours}"
                ));
            }
        }
        if codes.len() != ours.member_codes.len() {
            return Err(format!("union #{i}: member count differs"));
        }
    }
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

#[test]
fn layout_matches_capnp_compiler() {
    let iters: usize = env_or("LAYOUT_ITERS", DEFAULT_ITERS);
    let seed: u64 = env_or("LAYOUT_SEED", DEFAULT_SEED);

    let mut gen = Generator { rng: Rng(seed), next_name: 0, field_count: 0 };
    let structs: Vec<Vec<Decl>> = (0..iters).map(|_| gen.structure()).collect();

    let mut file = format!(
        "# Generated by taskgraph-tests layout_vs_capnp (seed {seed:#x}).\n@{FILE_ID:#x};\n\n\
         enum E {{ a @0; b @1; }}\nstruct P {{ x @0 :UInt32; }}\n\n"
    );
    let mut texts = Vec::with_capacity(iters);
    for (i, decls) in structs.iter().enumerate() {
        let mut text = format!("struct S{i} {{\n");
        write_decls(&mut text, decls, 1);
        text.push_str("}\n");
        file.push_str(&text);
        texts.push(text);
    }

    let dir = TempDir::new("layout-vs-capnp");
    let request_bytes = compile_to_request(dir.path(), "layout.capnp", &file);

    let mut options = ReaderOptions::new();
    options.traversal_limit_in_words(None);
    let message = capnp::serialize::read_message(&request_bytes[..], options)
        .expect("parse the CodeGeneratorRequest");
    let request = message
        .get_root::<capnp::schema_capnp::code_generator_request::Reader>()
        .expect("CodeGeneratorRequest root");
    let nodes = request.get_nodes().expect("nodes");
    let schema = Schema { nodes: nodes.iter().map(|n| (n.get_id(), n)).collect() };

    let file_node = schema.node(FILE_ID).expect("the file node");
    let mut struct_ids = HashMap::new();
    for nested in file_node.get_nested_nodes().expect("nested nodes") {
        let name = nested.get_name().expect("name").to_str().expect("utf-8").to_owned();
        struct_ids.insert(name, nested.get_id());
    }

    let mut fields_checked = 0;
    let mut unions_checked = 0;
    for (i, decls) in structs.iter().enumerate() {
        let name = format!("S{i}");
        let fail = |what: String| -> ! {
            panic!("struct {name} (seed {seed:#x}): {what}\n{}", texts[i]);
        };
        let id = struct_ids[&name];
        if ids::child_id(FILE_ID, &name) != id {
            fail(format!(
                "type id: capnp {id:#x}, ids::child_id {:#x}",
                ids::child_id(FILE_ID, &name)
            ));
        }
        let node = schema.node(id).unwrap_or_else(|e| fail(e));
        schema.check_group_ids(node).unwrap_or_else(|e| fail(e));

        let shape = StructShape { members: decls.iter().map(to_member).collect() };
        let ours = layout::compute(&shape).unwrap_or_else(|e| fail(format!("compute: {e}")));
        let mut theirs = Observed::default();
        schema.observe(decls, node, &mut theirs).unwrap_or_else(|e| fail(e));
        let st = struct_of(node).unwrap_or_else(|e| fail(e));
        compare(&ours, &theirs, st.get_data_word_count(), st.get_pointer_count())
            .unwrap_or_else(|e| fail(e));
        fields_checked += ours.fields.len();
        unions_checked += ours.unions.len();
    }
    eprintln!(
        "layout_vs_capnp: {iters} structs, {fields_checked} fields, {unions_checked} unions \
         match capnp (seed {seed:#x})"
    );
}
