//! Network namespaces for tests that need a link cut between processes that
//! stay alive (loopback cannot be cut). Needs root and `ip` (iproute2), as
//! on CI; [`Net::new`] says so plainly otherwise.
//!
//! Each server runs in a namespace of its own with two interfaces: one on a
//! *client* bridge, where the balancer and the clients (in the test's own
//! namespace) reach it, and one on a *cluster* bridge, where the servers
//! reach each other. Cutting a server's cluster link leaves it alive and
//! reachable by the balancer and clients, yet cut off from the other
//! servers: a master on the wrong side of a partition.

use crate::{Proc, SECRET};
use std::path::Path;
use std::process::Command;

/// The namespaces and bridges of one test; removed on drop.
pub struct Net {
    tag: String,
    /// The second octet of the test's addresses (10.N.1.x clients, 10.N.2.x
    /// cluster), unique enough among tests running at once.
    net: u32,
    servers: Vec<u32>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

impl Net {
    /// Two bridges and a namespace for each of servers `1..=n`.
    pub fn new(n: u32) -> Result<Net, String> {
        let pid = std::process::id();
        let mut net = Net {
            tag: format!("{}", pid % 100_000),
            net: 200 + pid % 50,
            servers: Vec::new(),
        };
        for bridge in [net.client_bridge(), net.cluster_bridge()] {
            ip(&["link", "add", &bridge, "type", "bridge"])?;
            ip(&["link", "set", &bridge, "up"])?;
        }
        ip(&[
            "addr",
            "add",
            &format!("10.{}.1.254/24", net.net),
            "dev",
            &net.client_bridge(),
        ])?;
        for id in 1..=n {
            net.add_server(id)?;
        }
        Ok(net)
    }

    fn client_bridge(&self) -> String {
        format!("fc{}", self.tag)
    }

    fn cluster_bridge(&self) -> String {
        format!("fs{}", self.tag)
    }

    fn ns(&self, id: u32) -> String {
        format!("ferry-{}-{id}", self.tag)
    }

    /// The host end of server `id`'s cluster link.
    fn cluster_veth(&self, id: u32) -> String {
        format!("fs{}s{id}", self.tag)
    }

    fn add_server(&mut self, id: u32) -> Result<(), String> {
        let ns = self.ns(id);
        ip(&["netns", "add", &ns])?;
        self.servers.push(id);
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        for (side, bridge, subnet) in [
            ("c", self.client_bridge(), 1),
            ("s", self.cluster_bridge(), 2),
        ] {
            let host = format!("f{side}{}s{id}", self.tag);
            let inner = format!("eth-{side}");
            ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", &inner, "netns", &ns,
            ])?;
            ip(&["link", "set", &host, "master", &bridge])?;
            ip(&["link", "set", &host, "up"])?;
            let addr = format!("10.{}.{subnet}.{id}/24", self.net);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
        }
        Ok(())
    }

    /// Where the balancer and clients reach server `id`.
    pub fn client_addr(&self, id: u32) -> String {
        format!("10.{}.1.{id}:7000", self.net)
    }

    /// Where the other servers reach server `id`.
    pub fn cluster_addr(&self, id: u32) -> String {
        format!("10.{}.2.{id}:7000", self.net)
    }

    /// Starts server `id` in its namespace, with its data under `data`,
    /// server 1 as the first master.
    pub fn start_server(&self, id: u32, data: &Path) -> Proc {
        let peers: Vec<String> = (self.servers.iter())
            .map(|i| format!("{i}={}", self.cluster_addr(*i)))
            .collect();
        let dir = data.join(format!("server-{id}"));
        let id_s = id.to_string();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(id)])
            .arg(crate::ferry_bin())
            .args(["server", "--id", &id_s, "--listen", "0.0.0.0:7000"])
            .arg("--data")
            .arg(&dir)
            .args(["--master", "1", "--peers", &peers.join(",")]);
        crate::prepare(&mut cmd, &[("FERRY_SECRET", SECRET)]);
        let mut p = Proc::start(&format!("server {id}"), cmd);
        p.wait_listening();
        p
    }

    /// Cuts server `id` off from the other servers (its clients still
    /// reach it), or mends the cut.
    pub fn set_cluster_link(&self, id: u32, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["link", "set", &self.cluster_veth(id), state])
            .unwrap_or_else(|e| panic!("cannot set server {id}'s cluster link {state}: {e}"));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The veths go with their namespaces.
        for id in &self.servers {
            let _ = ip(&["netns", "del", &self.ns(*id)]);
        }
        for bridge in [self.client_bridge(), self.cluster_bridge()] {
            let _ = ip(&["link", "del", &bridge]);
        }
    }
}
