//! Addresses on the command line, and binding listeners.

use crate::error::CliError;
use ferry_core::balancer::ServerAddr;
use std::net::{SocketAddr, TcpListener};

/// Checks that `s` looks like `HOST:PORT` (hostnames are resolved later).
pub fn host_port(s: &str) -> Result<String, String> {
    let s = s.trim();
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("'{s}' is not HOST:PORT"));
    };
    if host.is_empty() {
        return Err(format!("'{s}' has no host"));
    }
    if port.parse::<u16>().is_err() {
        return Err(format!("'{port}' in '{s}' is not a port number"));
    }
    Ok(s.to_string())
}

/// One item of `--servers`: `ADDR`, or `ID=ADDR`.
#[derive(Clone, Debug)]
pub struct ServerItem {
    pub id: Option<u32>,
    pub addr: String,
}

pub fn server_item(s: &str) -> Result<ServerItem, String> {
    match s.split_once('=') {
        Some((id, addr)) => {
            let id = id
                .trim()
                .parse()
                .map_err(|_| format!("'{id}' in '{s}' is not a server id"))?;
            Ok(ServerItem {
                id: Some(id),
                addr: host_port(addr)?,
            })
        }
        None => Ok(ServerItem {
            id: None,
            addr: host_port(s)?,
        }),
    }
}

/// One item of `--peers`: `ID=ADDR`, the id required.
pub fn peer(s: &str) -> Result<ServerAddr, String> {
    match server_item(s)? {
        ServerItem { id: Some(id), addr } => Ok(ServerAddr { id, addr }),
        ServerItem { id: None, .. } => Err(format!("'{s}' is not ID=ADDR")),
    }
}

/// Gives every item its id: its own, or its position in the list (from 1).
pub fn number_servers(items: Vec<ServerItem>) -> Result<Vec<(u32, String)>, CliError> {
    let mut servers: Vec<(u32, String)> = Vec::with_capacity(items.len());
    for (pos, item) in (1u32..).zip(items) {
        let id = item.id.unwrap_or(pos);
        if let Some((_, other)) = servers.iter().find(|(i, _)| *i == id) {
            return Err(CliError::Usage(format!(
                "server id {id} is given twice (for {other} and {})",
                item.addr
            )));
        }
        servers.push((id, item.addr));
    }
    Ok(servers)
}

/// Binds a listener and returns it with the address it really got (port 0
/// asks for a free port).
pub fn bind(addr: &str) -> Result<(TcpListener, SocketAddr), CliError> {
    let failed = |e: std::io::Error| CliError::Failed(format!("cannot listen on {addr}: {e}"));
    let listener = TcpListener::bind(addr).map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok((listener, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_accepts_names_and_ips_and_rejects_the_rest() {
        assert_eq!(host_port(" 127.0.0.1:7000 ").unwrap(), "127.0.0.1:7000");
        assert!(host_port("localhost:1").is_ok());
        assert!(host_port("[::1]:7000").is_ok());
        assert!(host_port("127.0.0.1").is_err());
        assert!(host_port(":7000").is_err());
        assert!(host_port("host:70000").is_err());
        assert!(host_port("host:x").is_err());
    }

    #[test]
    fn servers_are_numbered_by_position_unless_named() {
        let items = ["a:1", "7=b:2", "c:3"]
            .iter()
            .map(|s| server_item(s).unwrap())
            .collect();
        let servers = number_servers(items).unwrap();
        assert_eq!(
            servers,
            vec![(1, "a:1".into()), (7, "b:2".into()), (3, "c:3".into())]
        );
    }

    #[test]
    fn duplicate_ids_and_bad_items_are_refused() {
        let items = ["a:1", "1=b:2"]
            .iter()
            .map(|s| server_item(s).unwrap())
            .collect();
        let err = number_servers(items).unwrap_err();
        assert!(err.to_string().contains("server id 1 is given twice"));
        assert!(server_item("x=a:1").is_err());
        assert!(server_item("1=a").is_err());
    }

    #[test]
    fn peers_need_an_id() {
        let p = peer("2=h:7002").unwrap();
        assert_eq!((p.id, p.addr.as_str()), (2, "h:7002"));
        assert_eq!(peer("h:7002").unwrap_err(), "'h:7002' is not ID=ADDR");
        assert!(peer("2=h").is_err());
    }
}
