//! The simulated world keeps the file contract: a server's in-memory disk
//! or a peer's shared directory, and its queue, through the one host,
//! inside a turmoil client (the world reads the simulated clock).

use super::now;
use super::{DriverConfig, SimWorld};
use crate::disk::{shared_dir, shared_disk, SharedDir, SharedDisk, SimFiles};
use crate::trace::Trace;
use ferry_core::host::conformance::{self, DirFixture, Fixture};
use tokio::sync::mpsc;

#[derive(Default)]
struct Sim {
    disk: Option<SharedDisk>,
    dir: Option<SharedDir>,
}

impl Sim {
    fn world(&self) -> SimWorld {
        let disk = self.disk.clone().expect("a fresh world first");
        files_world(SimFiles::Server(disk))
    }

    fn dir(&self) -> &SharedDir {
        self.dir.as_ref().expect("a fresh shared directory first")
    }
}

fn files_world(files: SimFiles) -> SimWorld {
    // Nothing is ever received: the suite does file work only.
    let (tx, _) = mpsc::unbounded_channel();
    let mut world = SimWorld::new("node1", Trace::shared(), DriverConfig::default(), tx);
    world.files = Some(files);
    world
}

impl Fixture for Sim {
    type W = SimWorld;

    fn fresh(&mut self) -> SimWorld {
        self.disk = Some(shared_disk());
        self.world()
    }

    fn fill_disk(&mut self, _world: &mut SimWorld, temp: u64) {
        if let Some(d) = &self.disk {
            d.borrow_mut().full.insert(temp);
        }
    }

    /// With no latency configured the queue moves at once; this makes it
    /// move if its head's time came.
    fn finish(&mut self, world: &mut SimWorld) {
        world.work_disk();
    }

    fn restart(&mut self, world: SimWorld) -> (SimWorld, Vec<[u8; 32]>) {
        drop(world);
        let blobs = match &self.disk {
            Some(d) => d.borrow_mut().start().0,
            None => Vec::new(),
        };
        (self.world(), blobs)
    }
}

impl DirFixture for Sim {
    fn fresh_shared_dir(&mut self) -> SimWorld {
        let dir = shared_dir();
        self.dir = Some(dir.clone());
        files_world(SimFiles::Peer(dir))
    }

    fn place(&mut self, _world: &mut SimWorld, name: &str, content: &[u8]) {
        let ms = now().as_micros() / 1000;
        self.dir().borrow_mut().put(name, content, ms);
    }

    fn temporaries(&mut self, _world: &mut SimWorld) -> usize {
        self.dir().borrow().temps.len()
    }
}

#[test]
fn the_simulated_world_keeps_the_shared_directory_contract() {
    let mut sim = turmoil::Builder::new().build();
    sim.client("conformance", async {
        conformance::run_shared_dir(&mut Sim::default());
        Ok(())
    });
    sim.run().expect("the suite passes");
}

#[test]
fn the_simulated_world_keeps_the_file_contract() {
    let mut sim = turmoil::Builder::new().build();
    sim.client("conformance", async {
        conformance::run_all(&mut Sim::default());
        Ok(())
    });
    sim.run().expect("the suite passes");
}
