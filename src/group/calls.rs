//! The requests a group coordinator answers, each with its own reply type. A call travels to
//! the coordinator's shard as a `GroupCall` (the call with the sender of its typed reply), so
//! the mesh carries one message type while no caller ever matches a reply it did not ask for.
//! Runs on: the shard of the connection (building calls, awaiting replies) and the shard
//! that owns the group (answering them).
//! Invariant: every `GroupCall` is answered exactly once, by the coordinator or, when it
//! cannot be reached, by `GroupCall::refuse`.

use bytes::Bytes;
use futures_channel::oneshot;

use super::code::GroupCode;
use super::offsets::Committed;
use super::state::{JoinRequest, JoinResult, MemberDescription};
use crate::protocol::types::{GenerationId, TopicId, TopicPartition};

/// A request for a group coordinator and the shape of its answer.
pub trait Call: Send + Sized + 'static {
    type Reply: Send + 'static;
    /// The group the call is for (`None` for `List`, which asks a whole shard).
    fn group_id(&self) -> Option<&str>;
    /// `code` as this call's answer, for a call refused before it reached its group.
    fn refused(&self, code: GroupCode) -> Self::Reply;
    /// The call with the sender of its reply, as it crosses the mesh.
    fn wrap(self, reply: oneshot::Sender<Self::Reply>) -> GroupCall;
}

/// JoinGroup.
#[derive(Debug)]
pub struct Join {
    pub group_id: String,
    pub request: JoinRequest,
}

#[derive(Debug)]
pub struct JoinReply {
    pub error: GroupCode,
    pub member_id: String,
    pub protocol_type: Option<String>,
    /// Set when the join completed.
    pub result: Option<JoinResult>,
}

impl JoinReply {
    pub fn error(error: GroupCode, member_id: String) -> JoinReply {
        JoinReply {
            error,
            member_id,
            protocol_type: None,
            result: None,
        }
    }
}

/// SyncGroup.
#[derive(Debug)]
pub struct Sync {
    pub group_id: String,
    pub member_id: String,
    pub generation_id: GenerationId,
    /// (member id, assignment), from the leader.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug)]
pub struct SyncReply {
    pub error: GroupCode,
    pub assignment: Bytes,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
}

impl SyncReply {
    pub fn error(error: GroupCode) -> SyncReply {
        SyncReply {
            error,
            assignment: Bytes::new(),
            protocol_type: None,
            protocol_name: None,
        }
    }
}

/// Heartbeat: answered with one code.
#[derive(Debug)]
pub struct Heartbeat {
    pub group_id: String,
    pub member_id: String,
    pub generation_id: GenerationId,
}

/// LeaveGroup: one code per member, in the request's order.
#[derive(Debug)]
pub struct Leave {
    pub group_id: String,
    /// (member id, instance id) of each member leaving.
    pub members: Vec<(String, Option<String>)>,
}

/// One offset to commit.
#[derive(Debug, Clone)]
pub struct OffsetToCommit {
    pub partition: TopicPartition,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// The topic's id when committed (offsets of a re-created topic are not served).
    pub topic_id: TopicId,
}

/// OffsetCommit: one code per offset, in the request's order.
#[derive(Debug)]
pub struct Commit {
    pub group_id: String,
    pub member_id: String,
    pub generation_id: GenerationId,
    pub offsets: Vec<OffsetToCommit>,
}

/// OffsetFetch: the committed offsets of the partitions asked for (all, for `None`).
#[derive(Debug)]
pub struct FetchOffsets {
    pub group_id: String,
    pub partitions: Option<Vec<TopicPartition>>,
}

/// DescribeGroups, for one group.
#[derive(Debug)]
pub struct Describe {
    pub group_id: String,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, Default)]
pub struct GroupDescription {
    pub state: String,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

/// A listed group.
#[derive(Debug, Clone)]
pub struct Listed {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
}

/// ListGroups, for the groups of one shard.
#[derive(Debug)]
pub struct List;

/// The groups of one shard. As in Kafka, an error (an offsets partition here is offline, so
/// some groups cannot be listed) comes with the groups that could be.
#[derive(Debug)]
pub struct ListReply {
    pub error: GroupCode,
    pub groups: Vec<Listed>,
}

/// DeleteGroups, for one group: answered with one code.
#[derive(Debug)]
pub struct Delete {
    pub group_id: String,
}

/// OffsetDelete: one code per partition, in the request's order.
#[derive(Debug)]
pub struct DeleteOffsets {
    pub group_id: String,
    pub partitions: Vec<TopicPartition>,
}

/// A call with the sender of its reply: the one message type the mesh carries for groups.
#[derive(Debug)]
pub enum GroupCall {
    Join(Join, oneshot::Sender<JoinReply>),
    Sync(Sync, oneshot::Sender<SyncReply>),
    Heartbeat(Heartbeat, oneshot::Sender<GroupCode>),
    Leave(Leave, oneshot::Sender<Vec<GroupCode>>),
    Commit(Commit, oneshot::Sender<Vec<GroupCode>>),
    FetchOffsets(
        FetchOffsets,
        oneshot::Sender<Result<Vec<(TopicPartition, Committed)>, GroupCode>>,
    ),
    Describe(
        Describe,
        oneshot::Sender<Result<GroupDescription, GroupCode>>,
    ),
    List(List, oneshot::Sender<ListReply>),
    Delete(Delete, oneshot::Sender<GroupCode>),
    DeleteOffsets(DeleteOffsets, oneshot::Sender<Vec<GroupCode>>),
}

/// Implements `Call` for a call whose refusal is computed by `$refused` and whose variant of
/// `GroupCall` is `$variant`.
macro_rules! call {
    ($call:ident, $variant:ident, $reply:ty, |$c:ident, $code:ident| $refused:expr) => {
        impl Call for $call {
            type Reply = $reply;
            fn group_id(&self) -> Option<&str> {
                call!(@group $call self)
            }
            fn refused(&self, $code: GroupCode) -> $reply {
                let $c = self;
                let _ = $c;
                $refused
            }
            fn wrap(self, reply: oneshot::Sender<$reply>) -> GroupCall {
                GroupCall::$variant(self, reply)
            }
        }
    };
    (@group List $s:ident) => { None };
    (@group $other:ident $s:ident) => { Some(&$s.group_id) };
}

call!(Join, Join, JoinReply, |c, code| JoinReply::error(
    code,
    String::new()
));
call!(Sync, Sync, SyncReply, |c, code| SyncReply::error(code));
call!(Heartbeat, Heartbeat, GroupCode, |c, code| code);
call!(Leave, Leave, Vec<GroupCode>, |c, code| vec![
    code;
    c.members.len()
]);
call!(Commit, Commit, Vec<GroupCode>, |c, code| vec![
    code;
    c.offsets
        .len()
]);
call!(
    FetchOffsets,
    FetchOffsets,
    Result<Vec<(TopicPartition, Committed)>, GroupCode>,
    |c, code| Err(code)
);
call!(Describe, Describe, Result<GroupDescription, GroupCode>, |c, code| Err(code));
call!(List, List, ListReply, |c, code| ListReply {
    error: code,
    groups: Vec::new(),
});
call!(Delete, Delete, GroupCode, |c, code| code);
call!(DeleteOffsets, DeleteOffsets, Vec<GroupCode>, |c, code| {
    vec![code; c.partitions.len()]
});

impl GroupCall {
    /// The group the call is for (`None` for `List`).
    pub fn group_id(&self) -> Option<&str> {
        match self {
            GroupCall::Join(c, _) => c.group_id(),
            GroupCall::Sync(c, _) => c.group_id(),
            GroupCall::Heartbeat(c, _) => c.group_id(),
            GroupCall::Leave(c, _) => c.group_id(),
            GroupCall::Commit(c, _) => c.group_id(),
            GroupCall::FetchOffsets(c, _) => c.group_id(),
            GroupCall::Describe(c, _) => c.group_id(),
            GroupCall::List(c, _) => c.group_id(),
            GroupCall::Delete(c, _) => c.group_id(),
            GroupCall::DeleteOffsets(c, _) => c.group_id(),
        }
    }

    /// Answers the call with `code` without running it.
    pub fn refuse(self, code: GroupCode) {
        fn send<C: Call>(call: &C, tx: oneshot::Sender<C::Reply>, code: GroupCode) {
            // The caller may have gone away; nobody is left to answer then.
            let _ = tx.send(call.refused(code));
        }
        match self {
            GroupCall::Join(c, tx) => send(&c, tx, code),
            GroupCall::Sync(c, tx) => send(&c, tx, code),
            GroupCall::Heartbeat(c, tx) => send(&c, tx, code),
            GroupCall::Leave(c, tx) => send(&c, tx, code),
            GroupCall::Commit(c, tx) => send(&c, tx, code),
            GroupCall::FetchOffsets(c, tx) => send(&c, tx, code),
            GroupCall::Describe(c, tx) => send(&c, tx, code),
            GroupCall::List(c, tx) => send(&c, tx, code),
            GroupCall::Delete(c, tx) => send(&c, tx, code),
            GroupCall::DeleteOffsets(c, tx) => send(&c, tx, code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_call_answers_in_its_own_shape() {
        let leave = Leave {
            group_id: "g".into(),
            members: vec![("a".into(), None), ("b".into(), None)],
        };
        assert_eq!(leave.group_id(), Some("g"));
        let (tx, mut rx) = oneshot::channel();
        leave.wrap(tx).refuse(GroupCode::CoordinatorNotAvailable);
        assert_eq!(
            rx.try_recv().unwrap(),
            Some(vec![GroupCode::CoordinatorNotAvailable; 2])
        );
        assert_eq!(List.group_id(), None);
        let (tx, mut rx) = oneshot::channel();
        List.wrap(tx).refuse(GroupCode::CoordinatorNotAvailable);
        let reply = rx.try_recv().unwrap().expect("answered");
        assert_eq!(reply.error, GroupCode::CoordinatorNotAvailable);
        assert!(reply.groups.is_empty());
    }
}
