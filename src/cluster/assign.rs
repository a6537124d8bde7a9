//! Partition placement across brokers: which brokers hold a new partition's replicas and which
//! of them leads. A pure function of the image (every live broker and the partitions each
//! already leads) and the number of partitions wanted. Runs on: the controller shard of the
//! active controller. Invariants: only live brokers are chosen; each new leader is the live
//! broker leading the fewest partitions so far (ties to the lowest id), so leaders spread
//! evenly over brokers across all topics; a partition's replicas are distinct brokers, its
//! leader first.

use std::collections::BTreeMap;

use super::image::MetadataImage;
use super::records::Assignment;

/// How many partitions (of every topic and the offsets partitions) each live broker leads.
fn leader_load(image: &MetadataImage) -> BTreeMap<i32, usize> {
    let mut load: BTreeMap<i32, usize> = image.live_brokers().map(|b| (b.node_id, 0)).collect();
    let assignments = image
        .topics
        .values()
        .flat_map(|t| t.assignments.values())
        .chain(image.offsets.values());
    for a in assignments {
        if let Some(n) = load.get_mut(&a.leader) {
            *n += 1;
        }
    }
    load
}

/// Assignments for `count` new partitions with `replication_factor` replicas each, or `None`
/// if fewer brokers than that are live.
pub fn place(
    image: &MetadataImage,
    count: u32,
    replication_factor: usize,
) -> Option<Vec<Assignment>> {
    let mut load = leader_load(image);
    if replication_factor == 0 || load.len() < replication_factor {
        return None;
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let mut by_load: Vec<(usize, i32)> = load.iter().map(|(id, n)| (*n, *id)).collect();
        by_load.sort_unstable();
        let replicas: Vec<i32> = by_load
            .iter()
            .take(replication_factor)
            .map(|(_, id)| *id)
            .collect();
        let leader = replicas[0];
        *load.get_mut(&leader).expect("a live broker") += 1;
        out.push(Assignment {
            replicas,
            leader,
            leader_epoch: 0,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MetadataRecord;

    fn image_with(brokers: &[i32], fenced: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for b in brokers {
            image.apply(&MetadataRecord::BrokerRegistered {
                node_id: *b,
                epoch: 1,
                host: "h".into(),
                port: 1,
            });
        }
        for b in fenced {
            image.apply(&MetadataRecord::BrokerFenced {
                node_id: *b,
                epoch: 1,
            });
        }
        image
    }

    #[test]
    fn leaders_spread_over_live_brokers_across_topics() {
        let mut image = image_with(&[1, 2, 3, 4], &[4]);
        let six = place(&image, 6, 1).expect("three live brokers");
        let leaders: Vec<i32> = six.iter().map(|a| a.leader).collect();
        assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3], "{six:?}");
        image.apply(&MetadataRecord::TopicCreated {
            name: "a".into(),
            topic_id: [1; 16],
            partitions: 2,
            configs: vec![],
        });
        image.apply(&MetadataRecord::PartitionsAssigned {
            name: "a".into(),
            topic_id: [1; 16],
            first: 0,
            assignments: place(&image, 2, 1).unwrap(),
        });
        // Brokers 1 and 2 lead one partition each now: the next goes to 3.
        assert_eq!(place(&image, 1, 1).unwrap()[0].leader, 3);
        let three = place(&image, 1, 3).unwrap();
        assert_eq!(three[0].replicas.len(), 3);
        assert_eq!(three[0].replicas[0], three[0].leader);
        assert!(place(&image, 1, 4).is_none(), "broker 4 is fenced");
        assert!(place(&MetadataImage::default(), 1, 1).is_none());
    }
}
