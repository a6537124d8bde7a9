//! The cluster settings of the broker configuration: `node_id`, `controller_listen` and
//! `controller_quorum_voters` (`ID@HOST:PORT,...`, Kafka's syntax). Runs on: the main thread at
//! start. Invariants: a `ClusterConfig` that exists is consistent: voter ids and addresses are
//! unique, this broker is a voter (combined mode: every voter is a broker), and its controller
//! listener is not its Kafka listener; every refusal names the setting.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};

use super::{refuse, ConfigError};
use crate::constants::QUORUM_VOTERS_MAX;

/// This broker's place in a multi-broker cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub node_id: u64,
    /// Where this broker answers its quorum peers.
    pub controller_listen: SocketAddr,
    /// Every voter's controller address, by node id.
    pub voters: BTreeMap<u64, SocketAddr>,
}

impl ClusterConfig {
    /// The cluster's id, derived from the voter list, so every voter records the same one
    /// whichever becomes the first controller (32 hex digits, two FNV-1a hashes).
    pub fn cluster_id(&self) -> String {
        let text: String = self
            .voters
            .iter()
            .map(|(id, addr)| format!("{id}@{addr},"))
            .collect();
        let hash = |seed: u64| {
            text.bytes().fold(seed, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
            })
        };
        format!(
            "{:016x}{:016x}",
            hash(0xcbf2_9ce4_8422_2325),
            hash(0x8422_2325_cbf2_9ce4)
        )
    }
}

fn resolve(setting: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or(())
        .or_else(|_| refuse(setting, format!("`{text}` is not a HOST:PORT address")))
}

/// Whether two listeners would want the same socket: the same port on the same address, or
/// on any address when either is a wildcard (0.0.0.0 or ::).
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Parses `ID@HOST:PORT,...`.
pub fn parse_voters(text: &str) -> Result<BTreeMap<u64, SocketAddr>, ConfigError> {
    const S: &str = "controller_quorum_voters";
    let mut voters = BTreeMap::new();
    for entry in text.split(',').map(str::trim) {
        let Some((id, addr)) = entry.split_once('@') else {
            return refuse(S, format!("`{entry}` is not ID@HOST:PORT"));
        };
        let id: u64 = match id.parse::<i32>() {
            Ok(id) if id >= 0 => id as u64,
            _ => {
                return refuse(
                    S,
                    format!("`{id}` in `{entry}` is not a node id (0..=2147483647)"),
                )
            }
        };
        let addr = resolve(S, addr)?;
        if voters.values().any(|a| *a == addr) {
            return refuse(S, format!("{addr} is listed for two voters"));
        }
        if voters.insert(id, addr).is_some() {
            return refuse(S, format!("node id {id} is listed twice"));
        }
        if voters.len() > QUORUM_VOTERS_MAX {
            return refuse(S, format!("at most {QUORUM_VOTERS_MAX} voters"));
        }
    }
    Ok(voters)
}

/// The cluster settings, or `None` for a one-node cluster (no voters given).
pub fn cluster_config(
    node_id: Option<i32>,
    controller_listen: Option<&str>,
    voters: Option<&str>,
    listen: SocketAddr,
) -> Result<Option<ClusterConfig>, ConfigError> {
    if let Some(id) = node_id {
        if id < 0 {
            return refuse("node_id", format!("must be 0..=2147483647, got {id}"));
        }
    }
    let Some(voters) = voters else {
        if controller_listen.is_some() {
            return refuse(
                "controller_listen",
                "needs controller_quorum_voters (without them the broker is a one-node cluster)",
            );
        }
        return Ok(None);
    };
    let voters = parse_voters(voters)?;
    let Some(node_id) = node_id else {
        return refuse("node_id", "must be set with controller_quorum_voters");
    };
    let node_id = node_id as u64;
    let Some(own) = voters.get(&node_id).copied() else {
        return refuse(
            "node_id",
            format!(
                "{node_id} is not among controller_quorum_voters (ids {:?}): every broker of a \
                 cluster is a voter",
                voters.keys().collect::<Vec<_>>()
            ),
        );
    };
    let controller_listen = match controller_listen {
        Some(text) => resolve("controller_listen", text)?,
        None => own,
    };
    if controller_listen.port() != own.port() {
        return refuse(
            "controller_listen",
            format!(
                "{controller_listen} is not on the port controller_quorum_voters gives node \
                 {node_id} ({own}): its peers could not reach it"
            ),
        );
    }
    if clash(controller_listen, listen) || clash(own, listen) {
        return refuse(
            "controller_listen",
            format!("{controller_listen} is also the Kafka listener (listen)"),
        );
    }
    Ok(Some(ClusterConfig {
        node_id,
        controller_listen,
        voters,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const VOTERS: &str = "1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293";

    #[test]
    fn a_consistent_quorum_is_accepted() {
        let c = cluster_config(Some(2), None, Some(VOTERS), addr("127.0.0.1:9192"))
            .unwrap()
            .unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.controller_listen, addr("127.0.0.1:9193"));
        assert_eq!(c.voters.len(), 3);
        let bind_all = cluster_config(
            Some(2),
            Some("0.0.0.0:9193"),
            Some(VOTERS),
            addr("127.0.0.1:9192"),
        );
        assert_eq!(
            bind_all.unwrap().unwrap().controller_listen,
            addr("0.0.0.0:9193")
        );
        assert_eq!(
            cluster_config(None, None, None, addr("127.0.0.1:9092")).unwrap(),
            None
        );
    }

    /// Each inconsistency is refused with the setting it concerns named.
    #[test]
    fn inconsistent_quorums_are_refused_naming_the_setting() {
        let listen = addr("127.0.0.1:9092");
        type Case<'a> = (Option<i32>, Option<&'a str>, Option<&'a str>, &'a str);
        let cases: &[Case] = &[
            (
                Some(1),
                None,
                Some("1@127.0.0.1:9093,1@127.0.0.1:9193"),
                "controller_quorum_voters",
            ),
            (
                Some(1),
                None,
                Some("1@127.0.0.1:9093,2@127.0.0.1:9093"),
                "controller_quorum_voters",
            ),
            (
                Some(1),
                None,
                Some("1-127.0.0.1:9093"),
                "controller_quorum_voters",
            ),
            (
                Some(1),
                None,
                Some("x@127.0.0.1:9093"),
                "controller_quorum_voters",
            ),
            (
                Some(1),
                None,
                Some("-4@127.0.0.1:9093"),
                "controller_quorum_voters",
            ),
            (Some(1), None, Some("1@nowhere"), "controller_quorum_voters"),
            (Some(1), None, Some(""), "controller_quorum_voters"),
            (None, None, Some(VOTERS), "node_id"),
            (Some(4), None, Some(VOTERS), "node_id"),
            (Some(-1), None, None, "node_id"),
            (
                Some(1),
                Some("127.0.0.1:9999"),
                Some(VOTERS),
                "controller_listen",
            ),
            (Some(1), Some("127.0.0.1:9093"), None, "controller_listen"),
            (
                Some(1),
                None,
                Some("1@127.0.0.1:9092,2@127.0.0.1:9193"),
                "controller_listen",
            ),
            (
                Some(1),
                Some("0.0.0.0:9092"),
                Some("1@10.0.0.1:9092,2@10.0.0.2:9092"),
                "controller_listen",
            ),
        ];
        for (node, controller, voters, setting) in cases {
            let e = cluster_config(*node, *controller, *voters, listen)
                .expect_err(&format!("{node:?} {controller:?} {voters:?} is refused"));
            assert_eq!(e.setting, *setting, "{voters:?}: {e}");
        }
    }
}
