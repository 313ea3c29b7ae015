//! Peers (`ferry peer` nodes) in the in-memory cluster: each runs in the
//! one host on a [`MemWorld`] whose files are a shared directory, listens
//! at `10.0.1.K:9000` (the tracker takes only `IP:PORT`), and reaches the servers (`serverN:7000`) and the other
//! peers through the cluster's network. A crashed peer keeps its directory.

use super::cluster::{Cluster, MemWorld};
use crate::accounts::token::SessionToken;
use crate::host::mem_dir::MemDir;
use crate::host::Host;
use crate::peer::{PeerConfig, PeerEvent, PeerNode};
use std::ops::ControlFlow;

pub(super) struct PeerSlot {
    pub(super) host: Option<Host<PeerNode, MemWorld>>,
    /// A crashed peer's world (its directory), for its restart.
    down: Option<MemWorld>,
    cfg: PeerConfig,
}

/// Where peer `k` (from 0) listens.
pub fn peer_addr(k: usize) -> String {
    format!("10.0.1.{}:9000", k + 1)
}

impl Cluster {
    /// Starts a peer logged in as `token`'s user (or not logged in), with
    /// an empty directory; its number.
    pub fn add_peer(&mut self, token: Option<SessionToken>) -> usize {
        let k = self.peers.len();
        let cfg = PeerConfig::new(peer_addr(k), token);
        self.peers.push(PeerSlot {
            host: None,
            down: Some(MemWorld::shared_dir()),
            cfg,
        });
        self.restart_peer(k);
        k
    }

    pub fn peer(&self, k: usize) -> &PeerNode {
        self.peer_host(k).node()
    }

    /// Runs `f` on peer `k` at the cluster's time, then carries what it
    /// asked for.
    pub fn with_peer<R>(
        &mut self,
        k: usize,
        f: impl FnOnce(&mut PeerNode, crate::Timestamp) -> R,
    ) -> R {
        let now = self.now;
        let h = (self.peers[k].host.as_mut()).unwrap_or_else(|| panic!("peer {k} is down"));
        h.world_mut().set_now(now);
        let r = f(h.node_mut(), now);
        self.settle();
        r
    }

    pub fn peer_dir(&self, k: usize) -> &MemDir {
        let slot = &self.peers[k];
        let world = match &slot.host {
            Some(h) => h.world(),
            None => slot.down.as_ref().expect("a peer is up or down"),
        };
        world.dir.as_ref().expect("a peer's world has a directory")
    }

    pub fn peer_dir_mut(&mut self, k: usize) -> &mut MemDir {
        let slot = &mut self.peers[k];
        let world = match &mut slot.host {
            Some(h) => h.world_mut(),
            None => slot.down.as_mut().expect("a peer is up or down"),
        };
        world.dir.as_mut().expect("a peer's world has a directory")
    }

    fn peer_host(&self, k: usize) -> &Host<PeerNode, MemWorld> {
        (self.peers[k].host.as_ref()).unwrap_or_else(|| panic!("peer {k} is down"))
    }

    /// Makes peer `k`'s reads come back `delay` later (a slow disk), so
    /// that a transfer takes simulated time.
    pub fn set_peer_read_delay(&mut self, k: usize, delay: Option<std::time::Duration>) {
        if let Some(h) = self.peers[k].host.as_mut() {
            h.world_mut().read_delay = delay;
        }
    }

    /// Events peer `k` told since the start.
    pub fn events_of(&self, k: usize) -> Vec<PeerEvent> {
        (self.peer_events.iter())
            .filter(|(p, _)| *p == k)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Peer `k` stops at once: its connections break, its directory stays.
    pub fn crash_peer(&mut self, k: usize) {
        let ix = self.size() + k;
        if let Some(h) = self.peers[k].host.take() {
            let (_, mut world) = h.into_parts();
            world.crash();
            self.peers[k].down = Some(world);
        }
        self.drop_links_of(ix);
        self.settle();
    }

    /// Starts peer `k` again on its directory (not registered, nothing open).
    pub fn restart_peer(&mut self, k: usize) {
        let slot = &mut self.peers[k];
        let Some(mut world) = slot.down.take() else {
            return;
        };
        world.set_now(self.now);
        if let Some(dir) = world.dir.as_mut() {
            dir.start();
        }
        let node = PeerNode::new(slot.cfg.clone());
        slot.host = Some(Host::new(node, world));
        self.settle();
    }

    /// Opens a connection to peer `k` from a test's hand (no peer node
    /// behind it), sends `bytes` on it, and returns it; what the peer
    /// answers is read with [`Cluster::received_as`] at node
    /// `size() + k`.
    pub fn raw_to_peer(&mut self, k: usize, bytes: &[u8]) -> crate::io::ConnId {
        let conn = crate::io::ConnId::accepted(self.next_accept);
        self.next_accept += 1;
        let ix = self.size() + k;
        self.inbox
            .insert((ix, conn), crate::frame::FrameDecoder::default());
        let now = self.now;
        if let Some(h) = self.peers[k].host.as_mut() {
            h.world_mut().set_now(now);
            h.handle_input(crate::io::Input::Accepted {
                identity: crate::io::Identity::Unchecked,
                conn,
                peer: "raw".into(),
            });
            h.handle_input(crate::io::Input::Received { conn, bytes });
        }
        self.settle();
        conn
    }

    /// Settles peer `k`'s host, then carries what it sent.
    pub(super) fn settle_peer(&mut self, k: usize) {
        let Some(h) = self.peers[k].host.as_mut() else {
            return;
        };
        let mut events = Vec::new();
        let settled = h.settle(|_, e| {
            events.push(e);
            ControlFlow::<()>::Continue(())
        });
        if let Err(e) = settled {
            panic!("peer {k} stopped: {e}");
        }
        self.peer_events.extend(events.into_iter().map(|e| (k, e)));
        let net = h.world_mut().take_net();
        let ix = self.size() + k;
        for out in net {
            self.carry(ix, out);
        }
    }
}
