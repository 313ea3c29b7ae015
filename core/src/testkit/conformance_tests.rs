//! The unit tests' in-memory world keeps the file contract.

use super::cluster::MemWorld;
use crate::host::conformance::{self, Fixture};

struct Mem;

impl Fixture for Mem {
    type W = MemWorld;

    fn fresh(&mut self) -> MemWorld {
        MemWorld::default()
    }

    fn fill_disk(&mut self, world: &mut MemWorld, temp: u64) {
        world.disk.full.insert(temp);
    }

    fn finish(&mut self, _world: &mut MemWorld) {}

    fn restart(&mut self, mut world: MemWorld) -> (MemWorld, Vec<[u8; 32]>) {
        world.crash();
        let blobs = world.disk.start().0;
        (world, blobs)
    }
}

#[test]
fn the_testkit_world_keeps_the_file_contract() {
    conformance::run_all(&mut Mem);
}
