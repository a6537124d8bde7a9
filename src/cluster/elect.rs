//! Partition leadership and in-sync replicas, decided by the active controller: which live
//! in-sync replica leads a partition whose leader is fenced, which fenced brokers leave the
//! ISRs, and whether a leader's request to change its ISR (Kafka's AlterPartition) is valid.
//! Pure functions of the image, so every rule is tested without a cluster. Runs on: the
//! controller shard of the active controller. Invariants: only an ISR member ever becomes
//! leader (no unclean election); every election bumps the leader epoch; an ISR is never empty
//! (when no member is live the partition stays offline, its ISR naming who may come back);
//! the leader is always in the ISR.

use super::image::MetadataImage;
use super::records::{Assignment, MetadataRecord, PartitionChange};
use crate::constants::{ASSIGNMENTS_PER_RECORD_MAX, OFFSETS_TOPIC, OFFSETS_TOPIC_ID};

/// The changes the brokers' liveness calls for: partitions led by a fenced (or never
/// registered) broker get a live ISR member as leader (the first in replica order, so the
/// preferred leader when it can), or none; fenced brokers leave the ISRs of partitions whose
/// leader is live. A broker shutting down counts as not live (it hands its leadership over
/// first).
pub fn leadership_changes(image: &MetadataImage) -> Vec<MetadataRecord> {
    let live = |b: i32| image.is_eligible(b);
    let mut out = Vec::new();
    let topics = image
        .topics
        .values()
        .map(|t| (t.name.as_str(), t.topic_id.0, &t.assignments, &t.isr));
    let offsets = std::iter::once((
        OFFSETS_TOPIC,
        OFFSETS_TOPIC_ID,
        &image.offsets,
        &image.offsets_isr,
    ));
    for (name, topic_id, assignments, isrs) in topics.chain(offsets) {
        let mut changes = Vec::new();
        for (p, a) in assignments {
            let isr = isrs.get(p).map_or(&a.replicas[..], |v| &v[..]);
            if let Some(c) = change_for(*p, a, isr, &live) {
                changes.push(c);
            }
        }
        for chunk in changes.chunks(ASSIGNMENTS_PER_RECORD_MAX) {
            out.push(MetadataRecord::PartitionsChanged {
                name: name.to_string(),
                topic_id,
                changes: chunk.to_vec(),
            });
        }
    }
    out
}

/// Partitions without a live leader.
pub fn offline_count(image: &MetadataImage) -> u64 {
    let topics = image.topics.values().flat_map(|t| t.assignments.values());
    topics
        .chain(image.offsets.values())
        .filter(|a| !image.is_live(a.leader))
        .count() as u64
}

/// One partition's change, if its leader or ISR names a broker that is not live.
fn change_for(
    partition: u32,
    a: &Assignment,
    isr: &[i32],
    live: &impl Fn(i32) -> bool,
) -> Option<PartitionChange> {
    let live_isr: Vec<i32> = isr.iter().copied().filter(|b| live(*b)).collect();
    if a.leader >= 0 && live(a.leader) && isr.contains(&a.leader) {
        // The leader stays; fenced followers leave its ISR.
        if live_isr.len() == isr.len() {
            return None;
        }
        return Some(PartitionChange {
            partition,
            leader: a.leader,
            leader_epoch: a.leader_epoch,
            isr: live_isr,
        });
    }
    // Elect: the first live ISR member in replica order.
    let next = a.replicas.iter().copied().find(|r| live_isr.contains(r));
    match next {
        Some(leader) => Some(PartitionChange {
            partition,
            leader,
            leader_epoch: a.leader_epoch + 1,
            isr: live_isr,
        }),
        // Nobody may lead: offline, the ISR kept (one of them holds every acknowledged record).
        None if a.leader != -1 => Some(PartitionChange {
            partition,
            leader: -1,
            leader_epoch: a.leader_epoch + 1,
            isr: isr.to_vec(),
        }),
        None => None,
    }
}

/// A leader whose log failed (a failed fdatasync: it refuses writes until restart) hands its
/// partition to another live in-sync replica, at leader epoch + 1, and leaves the ISR. `None`
/// if no other replica may lead (the partition keeps its leader, which answers
/// KAFKA_STORAGE_ERROR, rather than go offline).
pub fn resign(
    image: &MetadataImage,
    topic: &str,
    partition: u32,
    leader: i32,
    leader_epoch: i32,
) -> Result<Option<PartitionChange>, AlterRefused> {
    let (a, isr) = image
        .partition(topic, partition)
        .ok_or(AlterRefused::Unknown)?;
    if a.leader != leader || a.leader_epoch != leader_epoch {
        return Err(AlterRefused::StaleLeader);
    }
    let next = a
        .replicas
        .iter()
        .copied()
        .find(|r| *r != leader && isr.contains(r) && image.is_eligible(*r));
    Ok(next.map(|next| PartitionChange {
        partition,
        leader: next,
        leader_epoch: leader_epoch + 1,
        isr: isr.iter().copied().filter(|r| *r != leader).collect(),
    }))
}

/// Why a preferred-leader election was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreferredRefused {
    Unknown,
    /// The preferred replica already leads.
    NotNeeded,
    /// The preferred replica is not live or not in the ISR.
    NotAvailable,
}

/// Moves leadership to the partition's preferred replica (its first), if that one is live and
/// in sync: the change, at leader epoch + 1 (Kafka's preferred leader election).
pub fn preferred_change(
    image: &MetadataImage,
    topic: &str,
    partition: u32,
) -> Result<PartitionChange, PreferredRefused> {
    let (a, isr) = image
        .partition(topic, partition)
        .ok_or(PreferredRefused::Unknown)?;
    let preferred = *a.replicas.first().ok_or(PreferredRefused::Unknown)?;
    if a.leader == preferred {
        return Err(PreferredRefused::NotNeeded);
    }
    if !image.is_eligible(preferred) || !isr.contains(&preferred) {
        return Err(PreferredRefused::NotAvailable);
    }
    Ok(PartitionChange {
        partition,
        leader: preferred,
        leader_epoch: a.leader_epoch + 1,
        isr: isr.to_vec(),
    })
}

/// A leader's request to change its partition's ISR.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlterIsr {
    pub topic: String,
    pub partition: u32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
}

/// Why an ISR change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterRefused {
    /// No such partition (deleted, or never assigned).
    Unknown,
    /// The requester no longer leads at that epoch.
    StaleLeader,
    /// The ISR asked is not a set of live replicas holding the leader.
    Invalid(String),
}

/// The record that makes `req` the partition's ISR, `None` if it already is.
pub fn alter_isr(
    image: &MetadataImage,
    req: &AlterIsr,
) -> Result<Option<MetadataRecord>, AlterRefused> {
    let (a, current) = image
        .partition(&req.topic, req.partition)
        .ok_or(AlterRefused::Unknown)?;
    if a.leader != req.leader || a.leader_epoch != req.leader_epoch {
        return Err(AlterRefused::StaleLeader);
    }
    let mut sorted = req.isr.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != req.isr.len() || !req.isr.contains(&req.leader) {
        return Err(AlterRefused::Invalid(format!(
            "ISR {:?} must be distinct replicas including the leader {}",
            req.isr, req.leader
        )));
    }
    if let Some(b) = req
        .isr
        .iter()
        .find(|b| !a.replicas.contains(b) || !image.is_eligible(**b))
    {
        return Err(AlterRefused::Invalid(format!(
            "broker {b} is not a live replica of {}-{}",
            req.topic, req.partition
        )));
    }
    if req.isr == current {
        return Ok(None);
    }
    let topic_id = image.topic_id_of(&req.topic).ok_or(AlterRefused::Unknown)?;
    Ok(Some(MetadataRecord::PartitionsChanged {
        name: req.topic.clone(),
        topic_id,
        changes: vec![PartitionChange {
            partition: req.partition,
            leader: a.leader,
            leader_epoch: a.leader_epoch,
            isr: req.isr.clone(),
        }],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(brokers: &[(i32, bool)], replicas: &[i32], isr: Option<&[i32]>) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (b, fenced) in brokers {
            image.apply(&MetadataRecord::BrokerRegistered {
                node_id: *b,
                epoch: 1,
                host: "h".into(),
                port: 1,
            });
            if *fenced {
                image.apply(&MetadataRecord::BrokerFenced {
                    node_id: *b,
                    epoch: 1,
                });
            }
        }
        image.apply(&MetadataRecord::TopicCreated {
            name: "t".into(),
            topic_id: [1; 16],
            partitions: 1,
            configs: vec![],
        });
        image.apply(&MetadataRecord::PartitionsAssigned {
            name: "t".into(),
            topic_id: [1; 16],
            first: 0,
            assignments: vec![Assignment {
                replicas: replicas.to_vec(),
                leader: replicas[0],
                leader_epoch: 0,
            }],
        });
        if let Some(isr) = isr {
            image.apply(&MetadataRecord::PartitionsChanged {
                name: "t".into(),
                topic_id: [1; 16],
                changes: vec![PartitionChange {
                    partition: 0,
                    leader: replicas[0],
                    leader_epoch: 0,
                    isr: isr.to_vec(),
                }],
            });
        }
        image
    }

    fn apply_all(image: &mut MetadataImage, records: &[MetadataRecord]) {
        for r in records {
            image.apply(r);
        }
    }

    #[test]
    fn a_fenced_leader_is_replaced_by_the_first_live_isr_member_with_a_new_epoch() {
        let mut img = image(&[(1, true), (2, false), (3, false)], &[1, 2, 3], None);
        let changes = leadership_changes(&img);
        apply_all(&mut img, &changes);
        let (a, isr) = img.partition("t", 0).unwrap();
        assert_eq!((a.leader, a.leader_epoch), (2, 1));
        assert_eq!(isr, &[2, 3]);
        assert!(leadership_changes(&img).is_empty(), "settled");
    }

    #[test]
    fn only_isr_members_are_elected_and_an_empty_choice_leaves_the_partition_offline() {
        // 3 is live but out of the ISR: never elected (no unclean election).
        let mut img = image(
            &[(1, true), (2, true), (3, false)],
            &[1, 2, 3],
            Some(&[1, 2]),
        );
        let changes = leadership_changes(&img);
        apply_all(&mut img, &changes);
        let (a, isr) = img.partition("t", 0).unwrap();
        assert_eq!((a.leader, a.leader_epoch), (-1, 1));
        assert_eq!(
            isr,
            &[1, 2],
            "the ISR keeps who holds the acknowledged records"
        );
        assert!(leadership_changes(&img).is_empty());
        // 2 comes back: it leads, at a new epoch.
        img.apply(&MetadataRecord::BrokerUnfenced {
            node_id: 2,
            epoch: 1,
        });
        let changes = leadership_changes(&img);
        apply_all(&mut img, &changes);
        let (a, isr) = img.partition("t", 0).unwrap();
        assert_eq!((a.leader, a.leader_epoch), (2, 2));
        assert_eq!(isr, &[2]);
    }

    #[test]
    fn a_fenced_follower_leaves_the_isr_without_a_new_epoch_and_a_shutdown_moves_leadership() {
        let mut img = image(&[(1, false), (2, false), (3, true)], &[1, 2, 3], None);
        let changes = leadership_changes(&img);
        apply_all(&mut img, &changes);
        let (a, isr) = img.partition("t", 0).unwrap();
        assert_eq!((a.leader, a.leader_epoch), (1, 0));
        assert_eq!(isr, &[1, 2]);
        img.apply(&MetadataRecord::BrokerShuttingDown {
            node_id: 1,
            epoch: 1,
        });
        let changes = leadership_changes(&img);
        apply_all(&mut img, &changes);
        let (a, isr) = img.partition("t", 0).unwrap();
        assert_eq!((a.leader, a.leader_epoch), (2, 1));
        assert_eq!(isr, &[2]);
    }

    #[test]
    fn preferred_election_moves_leadership_back_only_to_a_live_in_sync_preferred_replica() {
        let mut img = image(&[(1, true), (2, false), (3, false)], &[1, 2, 3], None);
        let changes = leadership_changes(&img);
        apply_all(&mut img, &changes);
        assert_eq!(
            preferred_change(&img, "t", 0),
            Err(PreferredRefused::NotAvailable)
        );
        img.apply(&MetadataRecord::BrokerUnfenced {
            node_id: 1,
            epoch: 1,
        });
        // Live but out of the ISR (it has not caught up): still not available.
        assert_eq!(
            preferred_change(&img, "t", 0),
            Err(PreferredRefused::NotAvailable)
        );
        let rejoin = alter_isr(
            &img,
            &AlterIsr {
                topic: "t".into(),
                partition: 0,
                leader: 2,
                leader_epoch: 1,
                isr: vec![2, 3, 1],
            },
        )
        .unwrap()
        .unwrap();
        img.apply(&rejoin);
        let c = preferred_change(&img, "t", 0).unwrap();
        assert_eq!((c.leader, c.leader_epoch), (1, 2));
        img.apply(&MetadataRecord::PartitionsChanged {
            name: "t".into(),
            topic_id: [1; 16],
            changes: vec![c],
        });
        assert_eq!(
            preferred_change(&img, "t", 0),
            Err(PreferredRefused::NotNeeded)
        );
        assert_eq!(
            preferred_change(&img, "t", 9),
            Err(PreferredRefused::Unknown)
        );
    }

    #[test]
    fn a_leader_with_a_failed_log_resigns_to_an_in_sync_replica() {
        let img = image(
            &[(1, false), (2, false), (3, false)],
            &[1, 2, 3],
            Some(&[1, 3]),
        );
        let c = resign(&img, "t", 0, 1, 0).unwrap().unwrap();
        assert_eq!((c.leader, c.leader_epoch, c.isr), (3, 1, vec![3]));
        assert_eq!(resign(&img, "t", 0, 2, 0), Err(AlterRefused::StaleLeader));
        let alone = image(&[(1, false), (2, false)], &[1, 2], Some(&[1]));
        assert_eq!(
            resign(&alone, "t", 0, 1, 0),
            Ok(None),
            "nobody else in sync"
        );
    }

    #[test]
    fn alter_isr_checks_the_leader_epoch_and_the_members() {
        let img = image(&[(1, false), (2, false), (3, true)], &[1, 2, 3], None);
        let req = |leader, epoch, isr: &[i32]| AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader,
            leader_epoch: epoch,
            isr: isr.to_vec(),
        };
        assert_eq!(
            alter_isr(&img, &req(2, 0, &[1, 2])),
            Err(AlterRefused::StaleLeader)
        );
        assert_eq!(
            alter_isr(&img, &req(1, 1, &[1])),
            Err(AlterRefused::StaleLeader)
        );
        assert!(matches!(
            alter_isr(&img, &req(1, 0, &[2])),
            Err(AlterRefused::Invalid(_))
        ));
        assert!(matches!(
            alter_isr(&img, &req(1, 0, &[1, 1])),
            Err(AlterRefused::Invalid(_))
        ));
        assert!(
            matches!(
                alter_isr(&img, &req(1, 0, &[1, 3])),
                Err(AlterRefused::Invalid(_))
            ),
            "a fenced broker never joins"
        );
        assert_eq!(
            alter_isr(&img, &req(1, 0, &[1, 2, 3])),
            Err(AlterRefused::Invalid(
                "broker 3 is not a live replica of t-0".into()
            ))
        );
        let mut next = img.clone();
        let record = alter_isr(&img, &req(1, 0, &[1])).unwrap().unwrap();
        next.apply(&record);
        assert_eq!(next.partition("t", 0).unwrap().1, &[1]);
        assert_eq!(alter_isr(&next, &req(1, 0, &[1])), Ok(None));
        let mut unknown = req(1, 0, &[1]);
        unknown.partition = 5;
        assert_eq!(alter_isr(&img, &unknown), Err(AlterRefused::Unknown));
    }
}
