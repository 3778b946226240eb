//! Cap'n Proto type ids.
//!
//! A file id is a random 64-bit number with the top bit set. Every other id
//! is derived from its parent's, as the official compiler derives it
//! (`type-id.c++`): the first 8 bytes of an MD5 digest, read big-endian,
//! with the top bit set.

use md5::{Digest, Md5};

fn fold(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) | 1 << 63
}

/// The id of a named child (struct, enum, interface) of `parent`:
/// `MD5(parent as 8 little-endian bytes ++ name)`.
pub fn child_id(parent: u64, name: &str) -> u64 {
    let mut h = Md5::new();
    h.update(parent.to_le_bytes());
    h.update(name.as_bytes());
    fold(&h.finalize())
}

/// The id of the group (or named union) at `index` in its parent's
/// ordinal-sorted member list: `MD5(parent LE ++ index as u16 LE)`.
pub fn group_id(parent: u64, index: u16) -> u64 {
    let mut h = Md5::new();
    h.update(parent.to_le_bytes());
    h.update(index.to_le_bytes());
    fold(&h.finalize())
}

/// A file id derived from a name (e.g. a crate's), for files that have no
/// id written down: stable as long as the name is.
pub fn file_id_for(name: &str) -> u64 {
    child_id(0, &format!("taskgraph file {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vectors of capnproto's `type-id-test.c++`.
    #[test]
    fn matches_the_official_compiler() {
        assert_eq!(child_id(0xa93fc509624c72d9, "Node"), 0xe682ab4cf923a417);
        assert_eq!(child_id(0xe682ab4cf923a417, "NestedNode"), 0xdebf55bbfa0fc242);
        assert_eq!(group_id(0xe682ab4cf923a417, 7), 0x9ea0b19b37fb4435);
    }
}
