//! The production world keeps the file contract: real files in a temporary
//! directory, through the one host.

use ferry_core::host::conformance::{self, Fixture};
use ferry_runtime_smol::driver::RealWorld;
use ferry_runtime_smol::files::TMP_DIR;
use ferry_runtime_smol::Files;
use std::path::Path;
use tempfile::TempDir;

#[derive(Default)]
struct Real {
    dir: Option<TempDir>,
}

impl Real {
    fn root(&self) -> &Path {
        self.dir.as_ref().expect("a fresh world first").path()
    }

    fn start(&self) -> (RealWorld, Vec<[u8; 32]>) {
        let (files, blobs) = Files::server(self.root()).expect("a server's file root");
        (RealWorld::new("conformance").with_files(files), blobs)
    }
}

impl Fixture for Real {
    type W = RealWorld;

    fn fresh(&mut self) -> RealWorld {
        self.dir = Some(tempfile::tempdir().expect("a temporary directory"));
        self.start().0
    }

    /// `/dev/full` fails every write with `ENOSPC`: the temporary file is
    /// a link to it.
    fn fill_disk(&mut self, _world: &mut RealWorld, temp: u64) {
        let link = self.root().join(TMP_DIR).join(temp.to_string());
        std::os::unix::fs::symlink("/dev/full", link).expect("a link to /dev/full");
    }

    fn finish(&mut self, world: &mut RealWorld) {
        world.wait_idle();
    }

    fn restart(&mut self, world: RealWorld) -> (RealWorld, Vec<[u8; 32]>) {
        drop(world);
        let (world, mut blobs) = self.start();
        blobs.sort();
        (world, blobs)
    }
}

#[test]
fn the_production_world_keeps_the_file_contract() {
    assert!(
        Path::new("/dev/full").exists(),
        "the full-disk check needs /dev/full"
    );
    conformance::run_all(&mut Real::default());
}
