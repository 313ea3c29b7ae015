//! The unit tests' in-memory world keeps the file contract.

use super::cluster::MemWorld;
use crate::host::conformance::{self, DirFixture, Fixture};
use crate::host::mem_dir::MemDir;
use crate::host::World;
use crate::time::Timestamp;

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

impl DirFixture for Mem {
    fn fresh_shared_dir(&mut self) -> MemWorld {
        let mut world = MemWorld::shared_dir();
        world.set_now(Timestamp::from_micros(1_700_000_000_000_000));
        world
    }

    fn place(&mut self, world: &mut MemWorld, name: &str, content: &[u8]) {
        let now = world.now().as_micros() / 1000;
        dir(world).put(name, content, now);
    }

    fn temporaries(&mut self, world: &mut MemWorld) -> usize {
        dir(world).temps.len()
    }
}

fn dir(world: &mut MemWorld) -> &mut MemDir {
    world.dir.as_mut().expect("a shared directory's world")
}

#[test]
fn the_testkit_world_keeps_the_file_contract() {
    conformance::run_all(&mut Mem);
}

#[test]
fn the_testkit_world_keeps_the_shared_directory_contract() {
    conformance::run_shared_dir(&mut Mem);
}
