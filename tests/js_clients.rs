//! KafkaJS against the real binary: a third independent implementation of the protocol and of
//! the consumer group client (pure JavaScript, no librdkafka), driven by tests/js/clients.js.
//! scripts/test.sh installs kafkajs and sets TUSK_TEST_NODE_PATH; without it the test says so
//! and skips, unless TUSK_REQUIRE_NODE is set (CI sets it, so a missing install fails there).

mod common;

#[test]
fn kafkajs_round_trip_on_one_broker() {
    let broker = common::Broker::start(&[]);
    common::kafkajs_clients(&broker.bootstrap());
}
