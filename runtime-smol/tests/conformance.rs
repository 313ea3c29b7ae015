//! The production world keeps the file contract: real files in a temporary
//! directory, through the one host. A peer's shared directory is `shared`
//! inside it, so that the links of the checks point outside the directory
//! and nothing outside it is to be touched.

use ferry_core::host::conformance::{self, DirFixture, Fixture};
use ferry_runtime_smol::driver::RealWorld;
use ferry_runtime_smol::files::{SHARED_TMP_DIR, TMP_DIR};
use ferry_runtime_smol::Files;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

#[derive(Default)]
struct Real {
    dir: Option<TempDir>,
    /// The file outside the shared directory that this world's link
    /// points to, if the check put one.
    outside: Option<PathBuf>,
    /// Whether any check put a link (the suite must have run them here).
    linked: bool,
}

impl Real {
    fn root(&self) -> &Path {
        self.dir.as_ref().expect("a fresh world first").path()
    }

    fn shared(&self) -> PathBuf {
        self.root().join("shared")
    }

    /// A fresh temporary directory for the next check, once nothing
    /// outside the last one's shared directory was touched.
    fn renew(&mut self) {
        self.untouched_outside();
        self.dir = Some(tempfile::tempdir().expect("a temporary directory"));
    }

    /// The file the link of the check points to, if it put one, is as it
    /// was put there.
    fn untouched_outside(&mut self) {
        if let Some(outside) = self.outside.take() {
            assert_eq!(
                std::fs::read(outside).expect("the link's target"),
                b"not shared",
                "nothing outside the directory was touched"
            );
        }
    }

    fn start(&self) -> (RealWorld, Vec<[u8; 32]>) {
        let (files, blobs) = Files::server(self.root()).expect("a server's file root");
        (RealWorld::new("conformance").with_files(files), blobs)
    }
}

impl Fixture for Real {
    type W = RealWorld;

    fn fresh(&mut self) -> RealWorld {
        self.renew();
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

impl DirFixture for Real {
    fn fresh_shared_dir(&mut self) -> RealWorld {
        self.renew();
        std::fs::create_dir(self.shared()).expect("the shared directory");
        let files = Files::shared_dir(&self.shared()).expect("a shared directory");
        RealWorld::new("conformance").with_files(files)
    }

    fn place(&mut self, _world: &mut RealWorld, name: &str, content: &[u8]) {
        std::fs::write(self.shared().join(name), content).expect("a file put in");
    }

    fn place_symlink(&mut self, _world: &mut RealWorld, name: &str) -> bool {
        let outside = self.root().join("outside");
        std::fs::write(&outside, b"not shared").expect("a file outside");
        std::os::unix::fs::symlink(&outside, self.shared().join(name)).expect("a link");
        self.outside = Some(outside);
        self.linked = true;
        true
    }

    fn temporaries(&mut self, _world: &mut RealWorld) -> usize {
        let tmp = self.shared().join(SHARED_TMP_DIR);
        std::fs::read_dir(tmp).expect("the temporary files").count()
    }
}

#[test]
fn the_production_world_keeps_the_shared_directory_contract() {
    let mut real = Real::default();
    conformance::run_shared_dir(&mut real);
    real.untouched_outside();
    assert!(real.linked, "the checks of links ran");
}

#[test]
fn the_production_world_keeps_the_file_contract() {
    assert!(
        Path::new("/dev/full").exists(),
        "the full-disk check needs /dev/full"
    );
    conformance::run_all(&mut Real::default());
}
