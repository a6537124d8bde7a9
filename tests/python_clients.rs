//! The Python clients against the real binary: confluent-kafka (librdkafka 2.16) and
//! kafka-python, driven by tests/python/clients.py. scripts/test.sh builds the venv and sets
//! TUSK_TEST_PYTHON to its interpreter; without it (a bare `cargo test`) the test says so and
//! skips, unless TUSK_REQUIRE_PYTHON is set (CI sets it, so a missing venv fails there).

mod common;

#[test]
fn confluent_kafka_and_kafka_python_round_trip() {
    let broker = common::Broker::start(&[]);
    common::python_clients(&broker.bootstrap());
}
