//! Copies of what protocol 6 (the last before files had attributes) wrote
//! to a server's store, as it wrote them: the tests of older stores encode
//! with these, so that the bytes they read are the bytes a server of that
//! version left, whatever the current types become.

use super::entry::Origin;
use speedy::{Readable, Writable};

/// The variants of protocol 6's `Txn` that stored files (the others are
/// unchanged, and encode as they did).
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum Txn {
    #[speedy(tag = 3)]
    PutFile {
        owner: u64,
        name: String,
        size: u64,
        digest: [u8; 32],
        replace: bool,
        holder: u32,
    },
    #[speedy(tag = 7)]
    Noop,
    #[speedy(tag = 18)]
    PutFiles {
        owner: u64,
        files: Vec<NewFile>,
        replace: bool,
        holder: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct NewFile {
    pub name: String,
    pub size: u64,
    pub digest: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct Entry {
    pub index: u64,
    pub view: u64,
    pub at: u64,
    pub origin: Origin,
    pub txn: Txn,
}

/// A row of the files table.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct FileMeta {
    pub owner: u64,
    pub name: String,
    pub size: u64,
    pub digest: [u8; 32],
    pub at: u64,
    pub holder: u32,
}

/// `v`'s encoding, as a server writes it to its store.
pub fn bytes<T: Writable<speedy::LittleEndian>>(v: &T) -> Vec<u8> {
    v.write_to_vec().expect("a test value encodes")
}
