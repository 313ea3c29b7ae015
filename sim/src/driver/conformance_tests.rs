//! The simulated world keeps the file contract: a server's in-memory disk
//! and its queue, through the one host, inside a turmoil client (the world
//! reads the simulated clock).

use super::{DriverConfig, SimWorld};
use crate::disk::{shared_disk, SharedDisk, SimFiles};
use crate::trace::Trace;
use ferry_core::host::conformance::{self, Fixture};
use tokio::sync::mpsc;

#[derive(Default)]
struct Sim {
    disk: Option<SharedDisk>,
}

impl Sim {
    fn world(&self) -> SimWorld {
        let disk = self.disk.clone().expect("a fresh world first");
        // Nothing is ever received: the suite does file work only.
        let (tx, _) = mpsc::unbounded_channel();
        let mut world = SimWorld::new("server1", Trace::shared(), DriverConfig::default(), tx);
        world.files = Some(SimFiles::Server(disk));
        world
    }
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

#[test]
fn the_simulated_world_keeps_the_file_contract() {
    let mut sim = turmoil::Builder::new().build();
    sim.client("conformance", async {
        conformance::run_all(&mut Sim::default());
        Ok(())
    });
    sim.run().expect("the suite passes");
}
