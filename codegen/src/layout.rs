//! The Cap'n Proto struct layout engine.
//!
//! Given the shape of a struct (its fields with their ordinals and sizes,
//! its unions and groups), computes where every field lives on the wire,
//! exactly as the official `capnp` compiler does
//! (`NodeTranslator::StructLayout` in `node-translator.c++`):
//!
//! * members are visited in **ordinal order**, not declaration order;
//! * a data field takes the single free hole of its size if there is one,
//!   else splits a larger hole, else grows the data section by a word and
//!   leaves the rest of that word as holes (one per size);
//! * pointers are numbered sequentially;
//! * the members of a union overlap: each member is a group that reuses the
//!   union's existing data locations and pointer slots where it can;
//! * a union's 16-bit discriminant is allocated when its second member gets
//!   its first field (a `Void` member counts), in ordinal order.
//!
//! Offsets are in units of the field's own size, as in `schema.capnp`'s
//! `Field.slot.offset`: a bit index for `Bool`, a byte index for 8-bit
//! values, and so on; the pointer index for pointers.
//!
//! A union member that is a group is ordered within its union by the
//! lowest ordinal of the fields inside it: that is when capnp creates the
//! member's schema (numbering its discriminant value) and when the member
//! places its first field (see [`compute`]).
//!
//! Scope of the port: unions inside union members are rejected
//! ([`LayoutError::NestedUnionInUnionGroup`]), so a union's parent scope is
//! always the struct itself (a plain group allocates straight into its
//! parent). capnp's code for a union whose parent is a union member's group
//! (`Group::tryExpandData` and the "issue 344" checks) is therefore not
//! needed and not ported. `compute` is checked against `capnp compile` by
//! the property test `tests/tests/layout_vs_capnp.rs`.

/// What one field occupies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotKind {
    /// No space (`Void`).
    Void,
    /// A data field of `2^lg` bits: 0 = Bool, 3 = 8-bit, 4 = 16-bit (and
    /// enums), 5 = 32-bit, 6 = 64-bit.
    Data(u8),
    /// One pointer slot (Text, Data, List, struct).
    Pointer,
}

/// One field of a struct, group or union.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field's ordinal (`@N`).
    pub ordinal: u32,
    /// What it occupies.
    pub kind: SlotKind,
}

/// A member of a struct or group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Member {
    /// A plain field.
    Field(Field),
    /// A `:group`. Outside a union its fields allocate in the enclosing
    /// scope; as a union member it is one of the union's overlapping groups.
    Group(Vec<Member>),
    /// An unnamed or named union (the layout is the same for both).
    Union(Union),
}

/// A union: each member is a [`Member::Field`] or a [`Member::Group`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Union {
    /// The members, in declaration order.
    pub members: Vec<Member>,
}

/// The shape of a struct: its members in declaration order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StructShape {
    /// The members, in declaration order.
    pub members: Vec<Member>,
}

/// Where everything of a [`StructShape`] lives.
///
/// `fields` and `unions` are in **pre-order declaration order**: walk the
/// members as declared; a field is recorded when met; a union is recorded
/// when met, before its members; a group records nothing itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Size of the data section in 64-bit words.
    pub data_words: u16,
    /// Number of pointers.
    pub pointers: u16,
    /// The offset of every field (units of its own size; 0 for `Void`).
    pub fields: Vec<u32>,
    /// Every union's discriminant.
    pub unions: Vec<UnionLayout>,
}

/// Where a union keeps its discriminant, and each member's value of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnionLayout {
    /// Offset of the 16-bit discriminant, in units of 16 bits.
    pub discriminant_offset: u32,
    /// The discriminant value of each member, in declaration order.
    pub member_codes: Vec<u16>,
}

/// Why a shape cannot be laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Ordinals must be exactly `0..N`, each once.
    Ordinals(String),
    /// A union needs at least two members.
    UnionTooSmall,
    /// A union inside a group inside a union: capnp's "issue 344" shapes,
    /// which the derive never produces.
    NestedUnionInUnionGroup,
    /// The data section or pointer section exceeds 65535 words / pointers.
    TooLarge,
    /// A group contains no field at all (capnp: "Group must have at least
    /// one member"). A group that is a union member needs a field because
    /// its lowest field ordinal decides its place in the union.
    EmptyGroup,
    /// `SlotKind::Data(lg)` with an `lg` other than 0, 3, 4, 5 or 6.
    InvalidDataSize(u8),
    /// Groups and unions nested deeper than [`MAX_DEPTH`] levels.
    TooDeep,
    /// A broken invariant of the engine itself: a bug here, never expected.
    Internal(&'static str),
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutError::Ordinals(msg) => write!(f, "bad ordinals: {msg}"),
            LayoutError::UnionTooSmall => f.write_str("a union must have at least two members"),
            LayoutError::NestedUnionInUnionGroup => f.write_str(
                "a union cannot be nested in a group (or union) that is itself a union member",
            ),
            LayoutError::TooLarge => {
                f.write_str("the struct is too large: at most 65535 data words and 65535 pointers")
            }
            LayoutError::EmptyGroup => f.write_str("a group must contain at least one field"),
            LayoutError::InvalidDataSize(lg) => {
                write!(f, "invalid data size 2^{lg} bits: expected 1, 8, 16, 32 or 64 bits")
            }
            LayoutError::TooDeep => {
                write!(f, "groups and unions are nested more than {MAX_DEPTH} levels deep")
            }
            LayoutError::Internal(what) => write!(f, "internal layout error: {what}"),
        }
    }
}

impl std::error::Error for LayoutError {}

/// How deeply groups and unions may nest inside a struct (each `:group`
/// and each union is one level). Deeper shapes are rejected with
/// [`LayoutError::TooDeep`] rather than risking the stack.
pub const MAX_DEPTH: usize = 64;

/// The largest ordinal the capnp parser accepts.
const MAX_ORDINAL: u32 = 65535;

/// The largest data section (in words) and pointer section (in pointers).
const MAX_SECTION: u32 = u16::MAX as u32;

/// Number of hole sizes: 1, 2, 4, 8, 16 and 32 bits (`lg` 0 to 5). A
/// 64-bit value never goes into a hole.
const HOLE_SIZES: u32 = 6;

/// Lays out `shape` exactly as `capnp compile` would.
///
/// The shape is first checked (ordinals `0..N` each once, unions with at
/// least two members, no empty groups, no union inside a union member,
/// valid data sizes); then every field is placed in ordinal order.
///
/// How a union's members are ordered: a member that is a field is placed
/// at its own ordinal; a member that is a group takes the place of the
/// *lowest* ordinal among all the fields inside it (at any depth of plain
/// groups). Discriminant values are numbered in that order, and the
/// union's 16-bit discriminant is allocated just before the field that
/// starts the second member in that order. The other fields of a group are
/// still placed at their own ordinals, interleaved with the rest of the
/// struct.
pub fn compute(shape: &StructShape) -> Result<Layout, LayoutError> {
    let mut plan = Plan::default();
    plan.collect(&shape.members, None, 0)?;
    let order = plan.ordinal_order()?;

    let mut engine = Engine::new(&plan);
    let mut offsets = vec![0u32; plan.fields.len()];
    for index in order {
        let field = &plan.fields[index];
        offsets[index] = match field.member {
            None => engine.top.place(field.kind)?,
            Some(member) => engine.place_in_member(member, field.kind)?,
        };
    }
    engine.finish(&plan, offsets)
}

// ---------------------------------------------------------------------------
// The shape, flattened.

/// A field of the shape, in pre-order declaration order.
#[derive(Debug)]
struct PlannedField {
    ordinal: u32,
    kind: SlotKind,
    /// The union member this field belongs to (directly, or through plain
    /// groups inside a union member), if any. A field belongs to at most
    /// one union member because unions cannot nest inside union members.
    member: Option<usize>,
}

/// One member of one union.
#[derive(Debug)]
struct PlannedMember {
    union: usize,
    /// Its index among the union's members, in declaration order.
    position: usize,
}

/// The checked, flattened shape: fields, unions (pre-order) and the
/// members of all unions.
#[derive(Debug, Default)]
struct Plan {
    fields: Vec<PlannedField>,
    /// The member count of each union.
    unions: Vec<usize>,
    members: Vec<PlannedMember>,
}

impl Plan {
    /// Walks `decls` in declaration order. `member` is the union member the
    /// declarations are inside (if any); `depth` the nesting level.
    fn collect(
        &mut self,
        decls: &[Member],
        member: Option<usize>,
        depth: usize,
    ) -> Result<(), LayoutError> {
        if depth > MAX_DEPTH {
            return Err(LayoutError::TooDeep);
        }
        for decl in decls {
            match decl {
                Member::Field(field) => self.push_field(field, member)?,
                Member::Group(inner) => self.collect_group(inner, member, depth + 1)?,
                Member::Union(union) => {
                    // A union inside a union member would make the union's
                    // parent scope a union group: the paths where capnp
                    // checks for issue 344. We do not go there.
                    if member.is_some() {
                        return Err(LayoutError::NestedUnionInUnionGroup);
                    }
                    self.collect_union(union, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    fn collect_union(&mut self, union: &Union, depth: usize) -> Result<(), LayoutError> {
        if depth > MAX_DEPTH {
            return Err(LayoutError::TooDeep);
        }
        if union.members.len() < 2 {
            return Err(LayoutError::UnionTooSmall);
        }
        let union_index = self.unions.len();
        self.unions.push(union.members.len());
        for (position, decl) in union.members.iter().enumerate() {
            let member = self.members.len();
            self.members.push(PlannedMember { union: union_index, position });
            match decl {
                Member::Field(field) => self.push_field(field, Some(member))?,
                Member::Group(inner) => self.collect_group(inner, Some(member), depth + 1)?,
                // capnp treats a union directly in a union as a one-member
                // group holding that union: the same issue-344 shape.
                Member::Union(_) => return Err(LayoutError::NestedUnionInUnionGroup),
            }
        }
        Ok(())
    }

    fn collect_group(
        &mut self,
        inner: &[Member],
        member: Option<usize>,
        depth: usize,
    ) -> Result<(), LayoutError> {
        let before = self.fields.len();
        self.collect(inner, member, depth)?;
        if self.fields.len() == before {
            return Err(LayoutError::EmptyGroup);
        }
        Ok(())
    }

    fn push_field(&mut self, field: &Field, member: Option<usize>) -> Result<(), LayoutError> {
        if let SlotKind::Data(lg) = field.kind {
            if !matches!(lg, 0 | 3..=6) {
                return Err(LayoutError::InvalidDataSize(lg));
            }
        }
        self.fields.push(PlannedField { ordinal: field.ordinal, kind: field.kind, member });
        Ok(())
    }

    /// Checks that the ordinals are exactly `0..N`, each once, and returns
    /// the field indices in ordinal order. Problems are reported in ordinal
    /// order, like capnp's duplicate-ordinal detector.
    fn ordinal_order(&self) -> Result<Vec<usize>, LayoutError> {
        if let Some(field) = self.fields.iter().find(|f| f.ordinal > MAX_ORDINAL) {
            return Err(LayoutError::Ordinals(format!(
                "ordinal @{} is larger than the maximum, @{MAX_ORDINAL}",
                field.ordinal
            )));
        }
        let mut sorted: Vec<(u32, usize)> =
            self.fields.iter().enumerate().map(|(i, f)| (f.ordinal, i)).collect();
        sorted.sort_unstable();
        let count = sorted.len();
        // No problem so far means the ordinals before position `i` are
        // exactly `0..i`.
        for (expected, &(ordinal, _)) in (0u32..).zip(&sorted) {
            if ordinal < expected {
                return Err(LayoutError::Ordinals(format!(
                    "ordinal @{ordinal} is used more than once; the {count} fields must use \
                     @0 to @{} once each",
                    count - 1
                )));
            }
            if ordinal > expected {
                return Err(LayoutError::Ordinals(format!(
                    "ordinal @{expected} is missing; the {count} fields must use @0 to @{} \
                     once each",
                    count - 1
                )));
            }
        }
        Ok(sorted.into_iter().map(|(_, index)| index).collect())
    }
}

// ---------------------------------------------------------------------------
// Free space.

/// The free space inside an allocated region: at most one hole of each
/// size from 1 to 32 bits. `at[lg]` is the offset of the hole of `2^lg`
/// bits in units of its own size, 0 meaning "no hole" (offset 0 is always
/// taken by the first thing placed, so it is never a hole).
///
/// Why one hole per size suffices: every value is a power of two bits,
/// aligned to its size. Carving `2^n` bits out of the smallest hole of
/// `2^m >= 2^n` bits leaves exactly one hole of each size `2^n..2^m`, none
/// of which could have existed (else it would have been chosen).
#[derive(Clone, Copy, Debug, Default)]
struct Holes {
    at: [u32; HOLE_SIZES as usize],
}

impl Holes {
    /// Takes space for `2^lg` bits from the holes, splitting a larger hole
    /// if needed (its upper half becomes a new hole). Returns the offset in
    /// units of `2^lg` bits.
    fn take(&mut self, lg: u32) -> Option<u32> {
        let slot = self.at.get_mut(lg as usize)?;
        if *slot != 0 {
            return Some(std::mem::take(slot));
        }
        let larger = self.take(lg + 1)?;
        self.at[lg as usize] = larger * 2 + 1;
        Some(larger * 2)
    }

    /// Records the free space left after placing `2^lg` bits at the start
    /// of a fresh, aligned region of `2^end_lg` bits: one hole of each size
    /// `2^lg .. 2^end_lg`, the first at `offset` (in units of `2^lg`).
    fn add_tail(&mut self, mut lg: u32, mut offset: u32, end_lg: u32) {
        while lg < end_lg.min(HOLE_SIZES) {
            self.at[lg as usize] = offset;
            lg += 1;
            offset = offset.div_ceil(2);
        }
    }

    /// Tries to grow the value of `2^lg` bits at `offset` to `2^(lg +
    /// factor)` bits by merging it with the holes right after it; consumes
    /// them on success.
    fn grow(&mut self, lg: u32, offset: u32, factor: u32) -> bool {
        if factor == 0 {
            return true;
        }
        if lg >= HOLE_SIZES || self.at[lg as usize] != offset + 1 {
            return false;
        }
        if !self.grow(lg + 1, offset / 2, factor - 1) {
            return false;
        }
        self.at[lg as usize] = 0;
        true
    }

    /// The size of the smallest hole of at least `2^lg` bits.
    fn smallest_at_least(&self, lg: u32) -> Option<u32> {
        (lg..HOLE_SIZES).find(|&l| self.at[l as usize] != 0)
    }
}

// ---------------------------------------------------------------------------
// The struct's own sections.

/// The data and pointer sections of the struct.
#[derive(Debug, Default)]
struct Sections {
    data_words: u32,
    pointers: u32,
    holes: Holes,
}

impl Sections {
    fn place(&mut self, kind: SlotKind) -> Result<u32, LayoutError> {
        match kind {
            SlotKind::Void => Ok(0),
            SlotKind::Data(lg) => self.add_data(u32::from(lg)),
            SlotKind::Pointer => self.add_pointer(),
        }
    }

    /// A hole if one fits, else a new word at the end of the data section.
    fn add_data(&mut self, lg: u32) -> Result<u32, LayoutError> {
        if let Some(offset) = self.holes.take(lg) {
            return Ok(offset);
        }
        if self.data_words >= MAX_SECTION {
            return Err(LayoutError::TooLarge);
        }
        let offset = self.data_words << (6 - lg);
        self.data_words += 1;
        self.holes.add_tail(lg, offset + 1, HOLE_SIZES);
        Ok(offset)
    }

    fn add_pointer(&mut self) -> Result<u32, LayoutError> {
        if self.pointers >= MAX_SECTION {
            return Err(LayoutError::TooLarge);
        }
        self.pointers += 1;
        Ok(self.pointers - 1)
    }
}

// ---------------------------------------------------------------------------
// Unions.

/// A block of the data section owned by a union; its members overlap in it.
#[derive(Clone, Copy, Debug)]
struct Block {
    lg: u32,
    /// In units of `2^lg` bits.
    offset: u32,
}

impl Block {
    /// Grows the block in place to `2^lg` bits, if the struct's free space
    /// right after it allows.
    fn grow_to(&mut self, sections: &mut Sections, lg: u32) -> bool {
        if lg <= self.lg {
            return true;
        }
        let factor = lg - self.lg;
        if !sections.holes.grow(self.lg, self.offset, factor) {
            return false;
        }
        self.offset >>= factor;
        self.lg = lg;
        true
    }

    /// The offset of the block's start in units of `2^lg` bits (`lg` at
    /// most the block's size).
    fn start_in(&self, lg: u32) -> u32 {
        self.offset << (self.lg - lg)
    }
}

/// How much of one [`Block`] one union member uses.
#[derive(Clone, Copy, Debug, Default)]
struct BlockUse {
    /// `None`: untouched. `Some(lg)`: the first `2^lg` bits of the block
    /// cover everything the member placed there.
    used: Option<u32>,
    /// Free space inside the used part, relative to the block's start.
    holes: Holes,
}

impl BlockUse {
    /// The size of the smallest free space in this block where `2^lg` bits
    /// would fit without growing the block.
    fn best_fit(&self, block: &Block, lg: u32) -> Option<u32> {
        match self.used {
            None => (lg <= block.lg).then_some(block.lg),
            // Too big for any hole inside the used part, but doubling the
            // used part makes room if the block is large enough.
            Some(used) if lg >= used => (lg < block.lg).then_some(lg),
            Some(used) => {
                self.holes.smallest_at_least(lg).or_else(|| (used < block.lg).then_some(used))
            }
        }
    }

    /// Places `2^lg` bits where [`best_fit`](Self::best_fit) found room.
    /// Returns the struct-relative offset in units of `2^lg` bits.
    fn place(&mut self, block: &Block, lg: u32) -> u32 {
        let local = match self.used {
            None => {
                self.used = Some(lg);
                0
            }
            Some(used) if lg >= used => {
                // Double to twice the new value's size; it takes the upper half.
                self.holes.add_tail(used, 1, lg);
                self.used = Some(lg + 1);
                1
            }
            Some(used) => match self.holes.take(lg) {
                Some(offset) => offset,
                None => {
                    // Double the used part; place at the start of the new half.
                    let offset = 1 << (used - lg);
                    self.holes.add_tail(lg, offset + 1, used);
                    self.used = Some(used + 1);
                    offset
                }
            },
        };
        block.start_in(lg) + local
    }

    /// Places `2^lg` bits by growing the block in the struct, when no
    /// block has room as it is.
    fn place_by_growing(
        &mut self,
        block: &mut Block,
        sections: &mut Sections,
        lg: u32,
    ) -> Result<Option<u32>, LayoutError> {
        match self.used {
            None => {
                if !block.grow_to(sections, lg) {
                    return Ok(None);
                }
                self.used = Some(lg);
                Ok(Some(block.start_in(lg)))
            }
            Some(used) => {
                let wanted = used.max(lg) + 1;
                if wanted > block.lg && !block.grow_to(sections, wanted) {
                    return Ok(None);
                }
                self.holes.add_tail(used, 1, wanted);
                self.used = Some(wanted);
                let local = self
                    .holes
                    .take(lg)
                    .ok_or(LayoutError::Internal("no room after growing a union block"))?;
                Ok(Some(block.start_in(lg) + local))
            }
        }
    }
}

/// The layout state of one union.
#[derive(Debug, Default)]
struct UnionState {
    blocks: Vec<Block>,
    pointer_slots: Vec<u32>,
    /// Members that have placed their first field so far.
    started: u32,
    discriminant: Option<u32>,
}

/// The layout state of one union member (a field of a union counts as a
/// one-field group).
#[derive(Debug)]
struct MemberState {
    union: usize,
    /// Parallel to the union's `blocks`; may lag behind (missing entries
    /// are untouched blocks).
    block_use: Vec<BlockUse>,
    pointers_used: usize,
    /// Its discriminant value, once its first field has come up.
    code: Option<u32>,
}

/// The whole layout state.
#[derive(Debug)]
struct Engine {
    top: Sections,
    unions: Vec<UnionState>,
    members: Vec<MemberState>,
}

impl Engine {
    fn new(plan: &Plan) -> Self {
        Engine {
            top: Sections::default(),
            unions: plan.unions.iter().map(|_| UnionState::default()).collect(),
            members: plan
                .members
                .iter()
                .map(|m| MemberState {
                    union: m.union,
                    block_use: Vec::new(),
                    pointers_used: 0,
                    code: None,
                })
                .collect(),
        }
    }

    /// Places a field of union member `member`.
    fn place_in_member(&mut self, member: usize, kind: SlotKind) -> Result<u32, LayoutError> {
        self.start_member(member)?;
        match kind {
            // The union's parent scope is the struct, where Void is a no-op.
            SlotKind::Void => Ok(0),
            SlotKind::Data(lg) => self.member_add_data(member, u32::from(lg)),
            SlotKind::Pointer => self.member_add_pointer(member),
        }
    }

    /// Called for every field of a member, before placing it. The first
    /// time, the member gets the next discriminant value of its union
    /// (capnp numbers members as their schemas are created, in ordinal
    /// order), and when it is the union's second member to start, the
    /// union's discriminant is allocated, before the field.
    fn start_member(&mut self, member: usize) -> Result<(), LayoutError> {
        let state = &mut self.members[member];
        if state.code.is_some() {
            return Ok(());
        }
        let union = &mut self.unions[state.union];
        state.code = Some(union.started);
        union.started += 1;
        if union.started == 2 && union.discriminant.is_none() {
            union.discriminant = Some(self.top.add_data(4)?);
        }
        Ok(())
    }

    fn member_add_data(&mut self, member: usize, lg: u32) -> Result<u32, LayoutError> {
        let Engine { top, unions, members } = self;
        let state = &mut members[member];
        let union = &mut unions[state.union];
        state.block_use.resize(union.blocks.len(), BlockUse::default());

        // 1. The tightest existing space among the union's blocks (the
        //    first block wins a tie).
        let mut best: Option<(u32, usize)> = None;
        for (i, (usage, block)) in state.block_use.iter().zip(&union.blocks).enumerate() {
            if let Some(size) = usage.best_fit(block, lg) {
                if best.is_none_or(|(best_size, _)| size < best_size) {
                    best = Some((size, i));
                }
            }
        }
        if let Some((_, i)) = best {
            return Ok(state.block_use[i].place(&union.blocks[i], lg));
        }

        // 2. Grow a block in place, first block first.
        for (usage, block) in state.block_use.iter_mut().zip(union.blocks.iter_mut()) {
            if let Some(offset) = usage.place_by_growing(block, top, lg)? {
                return Ok(offset);
            }
        }

        // 3. A new block from the struct.
        let offset = top.add_data(lg)?;
        union.blocks.push(Block { lg, offset });
        state.block_use.push(BlockUse { used: Some(lg), holes: Holes::default() });
        Ok(offset)
    }

    /// The k-th pointer of every member shares the union's k-th slot.
    fn member_add_pointer(&mut self, member: usize) -> Result<u32, LayoutError> {
        let state = &mut self.members[member];
        let union = &mut self.unions[state.union];
        let k = state.pointers_used;
        state.pointers_used += 1;
        if let Some(&slot) = union.pointer_slots.get(k) {
            return Ok(slot);
        }
        let slot = self.top.add_pointer()?;
        union.pointer_slots.push(slot);
        Ok(slot)
    }

    fn finish(self, plan: &Plan, offsets: Vec<u32>) -> Result<Layout, LayoutError> {
        let mut unions: Vec<UnionLayout> = plan
            .unions
            .iter()
            .zip(&self.unions)
            .map(|(&count, state)| {
                // Every union has two members with a field each, so its
                // discriminant was allocated during the ordinal walk.
                let discriminant_offset = state
                    .discriminant
                    .ok_or(LayoutError::Internal("a union never got its discriminant"))?;
                Ok(UnionLayout { discriminant_offset, member_codes: vec![0; count] })
            })
            .collect::<Result<_, LayoutError>>()?;
        for (planned, state) in plan.members.iter().zip(&self.members) {
            let code = state
                .code
                .and_then(|c| u16::try_from(c).ok())
                .ok_or(LayoutError::Internal("a union member never got a discriminant value"))?;
            unions[planned.union].member_codes[planned.position] = code;
        }
        Ok(Layout {
            data_words: u16::try_from(self.top.data_words).map_err(|_| LayoutError::TooLarge)?,
            pointers: u16::try_from(self.top.pointers).map_err(|_| LayoutError::TooLarge)?,
            fields: offsets,
            unions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field(ordinal: u32, kind: SlotKind) -> Member {
        Member::Field(Field { ordinal, kind })
    }
    fn data(ordinal: u32, lg: u8) -> Member {
        field(ordinal, SlotKind::Data(lg))
    }
    fn ptr(ordinal: u32) -> Member {
        field(ordinal, SlotKind::Pointer)
    }
    fn void(ordinal: u32) -> Member {
        field(ordinal, SlotKind::Void)
    }
    fn group(members: Vec<Member>) -> Member {
        Member::Group(members)
    }
    fn union(members: Vec<Member>) -> Member {
        Member::Union(Union { members })
    }
    fn shape(members: Vec<Member>) -> StructShape {
        StructShape { members }
    }
    fn layout(members: Vec<Member>) -> Layout {
        compute(&shape(members)).expect("valid shape")
    }
    fn error(members: Vec<Member>) -> LayoutError {
        compute(&shape(members)).expect_err("invalid shape")
    }

    const BOOL: u8 = 0;
    const B8: u8 = 3;
    const B16: u8 = 4;
    const B32: u8 = 5;
    const B64: u8 = 6;

    /// The `Edge` struct of the research report (`capnp-codegen.md` §1.1);
    /// the expected offsets are what `capnp compile -ocapnp` printed.
    #[test]
    fn edge() {
        let l = layout(vec![
            data(0, BOOL),                        // flag
            data(1, B8),                          // u8v
            data(2, B16),                         // u16v
            data(3, B32),                         // u32v
            data(4, B64),                         // u64v
            data(5, B8),                          // i8v
            data(6, B16),                         // i16v
            data(7, B32),                         // i32v
            data(8, B64),                         // i64v
            data(9, B32),                         // f32v
            data(10, B64),                        // f64v
            ptr(11),                              // text
            ptr(12),                              // data
            ptr(13),                              // list
            ptr(14),                              // inner
            ptr(15),                              // inners
            data(16, B16),                        // color (enum)
            union(vec![void(17), data(18, B64)]), // maybeCount :union
            ptr(19),                              // maybeInner
            data(20, B32),                        // withDefault
            data(21, BOOL),                       // flag2
            ptr(22),
            ptr(23),
            ptr(24),
        ]);
        assert_eq!((l.data_words, l.pointers), (8, 9)); // 64 bytes, 9 ptrs
        #[rustfmt::skip]
        let expected = vec![
            0, 1, 1, 1, 1,     // bits 0, 8..16, 16..32, 32..64, 64..128
            16, 9, 5, 3,       // bits 128..136, 144..160, 160..192, 192..256
            8, 5,              // bits 256..288, 320..384
            0, 1, 2, 3, 4,
            18,                // color: bits 288..304
            0, 6,              // none; some: bits 384..448
            5,
            14,                // withDefault: bits 448..480
            1,                 // flag2 fills the hole after flag
            6, 7, 8,
        ];
        assert_eq!(l.fields, expected);
        // The tag is at bits 304..320.
        assert_eq!(
            l.unions,
            vec![UnionLayout { discriminant_offset: 19, member_codes: vec![0, 1] }]
        );
    }

    /// `Option<u32>` as `union { none @4 :Void; some @5 :UInt32; }` after
    /// other fields. capnp: tag bits 96..112, `some` at bits 128..160.
    #[test]
    fn option_after_fields() {
        let l = layout(vec![
            data(0, B64),
            data(1, BOOL),
            ptr(2),
            data(3, B16),
            union(vec![void(4), data(5, B32)]),
        ]);
        assert_eq!((l.data_words, l.pointers), (3, 1));
        assert_eq!(l.fields, vec![0, 64, 0, 5, 0, 4]);
        assert_eq!(
            l.unions,
            vec![UnionLayout { discriminant_offset: 6, member_codes: vec![0, 1] }]
        );
    }

    /// A union of groups declared in an order that differs from their
    /// ordinals: each group is numbered by its lowest field ordinal, and
    /// the groups overlap in one 64-bit block and one pointer slot.
    #[test]
    fn union_of_groups() {
        let l = layout(vec![
            data(0, B32), // id
            union(vec![
                group(vec![data(7, BOOL), ptr(5)]),              // tagged: tag 3
                group(vec![data(1, B64)]),                       // circle: tag 0
                group(vec![data(2, B32), data(3, B32), ptr(6)]), // rect: tag 1
                void(4),                                         // empty: tag 2
            ]),
        ]);
        assert_eq!((l.data_words, l.pointers), (2, 1));
        // Pre-order: id, flag, name, radius, w, h, label, empty.
        assert_eq!(l.fields, vec![0, 64, 0, 1, 2, 3, 0, 0]);
        assert_eq!(
            l.unions,
            vec![UnionLayout { discriminant_offset: 2, member_codes: vec![3, 0, 1, 2] }]
        );
    }

    /// A group's place in its union comes from its lowest ordinal, even
    /// when that field is inside a nested plain group.
    #[test]
    fn group_member_ordered_by_lowest_ordinal_at_any_depth() {
        let l = layout(vec![union(vec![
            group(vec![data(3, B8), group(vec![data(0, B8)])]),
            data(1, B16),
            group(vec![group(vec![void(2)])]),
        ])]);
        assert_eq!(l.unions[0].member_codes, vec![0, 1, 2]);
        // capnp: @0 opens an 8-bit block at bits 0..8. @1 starts the second
        // member, so the tag is allocated first (bits 16..32); then @1 grows
        // the block in place to bits 0..16 (bits 8..16 were a free hole).
        // @3 doubles the first member's use of the grown block: bits 8..16.
        assert_eq!(l.unions[0].discriminant_offset, 1);
        // Pre-order: @3, @0, @1, @2.
        assert_eq!(l.fields, vec![1, 0, 0, 0]);
        assert_eq!((l.data_words, l.pointers), (1, 0));
    }

    /// Unions inside plain groups, and a union directly in the struct, are
    /// laid out against the struct's own sections.
    #[test]
    fn union_in_plain_group_is_fine() {
        let l = layout(vec![
            group(vec![ptr(2), group(vec![union(vec![data(0, B32), ptr(1)])])]),
            union(vec![data(3, B64), data(4, BOOL)]),
        ]);
        assert_eq!(l.unions.len(), 2);
        assert_eq!(l.fields.len(), 5);
    }

    #[test]
    fn empty_struct() {
        let l = layout(vec![]);
        assert_eq!((l.data_words, l.pointers), (0, 0));
        assert!(l.fields.is_empty() && l.unions.is_empty());
    }

    #[test]
    fn missing_ordinal() {
        let e = error(vec![data(0, B8), data(2, B8)]);
        let LayoutError::Ordinals(msg) = e else { panic!("{e:?}") };
        assert!(msg.contains("@1 is missing"), "{msg}");
    }

    #[test]
    fn ordinals_must_start_at_zero() {
        let e = error(vec![data(1, B8)]);
        let LayoutError::Ordinals(msg) = e else { panic!("{e:?}") };
        assert!(msg.contains("@0 is missing"), "{msg}");
    }

    #[test]
    fn duplicate_ordinal_across_union_and_group() {
        let e = error(vec![
            data(0, B8),
            group(vec![data(1, B8)]),
            union(vec![data(2, B8), data(1, B16)]),
        ]);
        let LayoutError::Ordinals(msg) = e else { panic!("{e:?}") };
        assert!(msg.contains("@1 is used more than once"), "{msg}");
    }

    #[test]
    fn ordinal_too_large() {
        let e = error(vec![data(0, B8), data(70000, B8)]);
        let LayoutError::Ordinals(msg) = e else { panic!("{e:?}") };
        assert!(msg.contains("@70000"), "{msg}");
    }

    #[test]
    fn union_too_small() {
        assert_eq!(error(vec![union(vec![data(0, B8)])]), LayoutError::UnionTooSmall);
        assert_eq!(error(vec![union(vec![])]), LayoutError::UnionTooSmall);
        assert_eq!(error(vec![group(vec![union(vec![void(0)])])]), LayoutError::UnionTooSmall);
    }

    #[test]
    fn union_in_union_group() {
        assert_eq!(
            error(vec![union(vec![
                group(vec![data(0, B8), union(vec![data(1, B8), data(2, B8)])]),
                data(3, B8),
            ])]),
            LayoutError::NestedUnionInUnionGroup
        );
        // Also through a plain group inside the union member.
        assert_eq!(
            error(vec![union(vec![
                void(0),
                group(vec![group(vec![union(vec![void(1), void(2)])])]),
            ])]),
            LayoutError::NestedUnionInUnionGroup
        );
        // A union as a direct member of a union (capnp: a named union in a
        // union, i.e. a group holding a union).
        assert_eq!(
            error(vec![union(vec![void(0), union(vec![void(1), void(2)])])]),
            LayoutError::NestedUnionInUnionGroup
        );
    }

    #[test]
    fn empty_group() {
        assert_eq!(error(vec![union(vec![void(0), group(vec![])])]), LayoutError::EmptyGroup);
        assert_eq!(
            error(vec![union(vec![void(0), group(vec![group(vec![])])])]),
            LayoutError::EmptyGroup
        );
        assert_eq!(error(vec![void(0), group(vec![])]), LayoutError::EmptyGroup);
    }

    #[test]
    fn invalid_data_size() {
        assert_eq!(error(vec![data(0, 1)]), LayoutError::InvalidDataSize(1));
        assert_eq!(error(vec![data(0, 7)]), LayoutError::InvalidDataSize(7));
    }

    #[test]
    fn too_large() {
        let words = (0..65536).map(|o| data(o, B64)).collect();
        assert_eq!(error(words), LayoutError::TooLarge);
        let pointers = (0..65536).map(ptr).collect();
        assert_eq!(error(pointers), LayoutError::TooLarge);
        // Exactly at the limit is fine.
        let l = layout((0..65535).map(ptr).collect());
        assert_eq!(l.pointers, 65535);
    }

    #[test]
    fn too_deep() {
        let mut m = void(0);
        for _ in 0..=MAX_DEPTH {
            m = group(vec![m]);
        }
        assert_eq!(error(vec![m]), LayoutError::TooDeep);
        let mut m = void(0);
        for _ in 0..MAX_DEPTH {
            m = group(vec![m]);
        }
        assert_eq!(layout(vec![m]).fields, vec![0]);
    }

    /// Every error has a message.
    #[test]
    fn errors_display() {
        for e in [
            LayoutError::Ordinals("x".into()),
            LayoutError::UnionTooSmall,
            LayoutError::NestedUnionInUnionGroup,
            LayoutError::TooLarge,
            LayoutError::EmptyGroup,
            LayoutError::InvalidDataSize(2),
            LayoutError::TooDeep,
            LayoutError::Internal("y"),
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    fn any_kind() -> impl Strategy<Value = SlotKind> {
        prop_oneof![
            Just(SlotKind::Void),
            Just(SlotKind::Pointer),
            (0u8..8).prop_map(SlotKind::Data),
        ]
    }

    /// Arbitrary (mostly invalid) shapes: ordinals near 0..N, any nesting.
    fn any_member() -> impl Strategy<Value = Member> {
        let leaf = (0u32..24, any_kind())
            .prop_map(|(ordinal, kind)| Member::Field(Field { ordinal, kind }));
        leaf.prop_recursive(4, 48, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Member::Group),
                proptest::collection::vec(inner, 0..5)
                    .prop_map(|members| Member::Union(Union { members })),
            ]
        })
    }

    proptest! {
        /// `compute` never panics, and whatever it accepts is consistent.
        #[test]
        fn never_panics(members in proptest::collection::vec(any_member(), 0..8)) {
            let shape = StructShape { members };
            if let Ok(l) = compute(&shape) {
                for u in &l.unions {
                    let mut codes = u.member_codes.clone();
                    codes.sort_unstable();
                    prop_assert!(codes.iter().enumerate().all(|(i, &c)| usize::from(c) == i));
                    prop_assert!(u.discriminant_offset < u32::from(l.data_words) * 4);
                }
            }
        }

        /// Plain fields (no unions) never overlap and stay inside the sections.
        #[test]
        fn plain_fields_do_not_overlap(
            kinds in proptest::collection::vec(any_kind(), 0..40),
            seed in any::<u64>(),
        ) {
            let kinds: Vec<SlotKind> = kinds
                .into_iter()
                .map(|k| match k {
                    SlotKind::Data(lg) if !matches!(lg, 0 | 3..=6) => SlotKind::Data(6),
                    k => k,
                })
                .collect();
            // Shuffle the ordinals deterministically from `seed`.
            let mut ordinals: Vec<u32> = (0..kinds.len() as u32).collect();
            let mut s = seed | 1;
            for i in (1..ordinals.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                ordinals.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let members = kinds
                .iter()
                .zip(&ordinals)
                .map(|(&kind, &ordinal)| Member::Field(Field { ordinal, kind }))
                .collect();
            let l = compute(&StructShape { members }).unwrap();
            let mut bits = vec![false; usize::from(l.data_words) * 64];
            let mut ptrs = vec![false; usize::from(l.pointers)];
            for (kind, &offset) in kinds.iter().zip(&l.fields) {
                match *kind {
                    SlotKind::Void => {}
                    SlotKind::Pointer => {
                        let p = &mut ptrs[offset as usize];
                        prop_assert!(!*p);
                        *p = true;
                    }
                    SlotKind::Data(lg) => {
                        let size = 1usize << lg;
                        let start = offset as usize * size;
                        for b in &mut bits[start..start + size] {
                            prop_assert!(!*b);
                            *b = true;
                        }
                    }
                }
            }
            prop_assert!(ptrs.iter().all(|&p| p));
        }
    }
}
