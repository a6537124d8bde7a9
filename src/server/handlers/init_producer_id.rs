//! InitProducerId for idempotent producers: a new producer id with epoch 0, or the same id with
//! the next epoch when the client re-initialises (KIP-360). Transactions are not served: a
//! transactional id is refused. Runs on: the connection's shard (ids are unique per shard; in a cluster
//! each shard takes blocks of ids from the controller, so no two brokers share one).

use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::{InitProducerIdRequest, ProducerId, ResponseKind};

use crate::protocol::ErrorCode;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: InitProducerIdRequest) -> ResponseKind {
    let mut r = InitProducerIdResponse::default();
    if request.transactional_id.is_some() {
        r.error_code = ErrorCode::InvalidRequest.code();
        r.producer_id = ProducerId(-1);
        r.producer_epoch = -1;
    } else if request.producer_id.0 >= 0
        && request.producer_epoch >= 0
        && request.producer_epoch < i16::MAX
    {
        r.producer_id = request.producer_id;
        r.producer_epoch = request.producer_epoch + 1;
    } else {
        match shard.next_producer_id().await {
            Some(id) => {
                r.producer_id = ProducerId(id.0);
                r.producer_epoch = 0;
            }
            // No controller to take a block of ids from: the client retries.
            None => {
                r.error_code = ErrorCode::CoordinatorNotAvailable.code();
                r.producer_id = ProducerId(-1);
                r.producer_epoch = -1;
            }
        }
    }
    ResponseKind::InitProducerId(r)
}
