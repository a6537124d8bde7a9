//! The Python clients against the real binary: confluent-kafka (librdkafka 2.16) and
//! kafka-python, driven by tests/python/clients.py. scripts/test.sh builds the venv and sets
//! TUSK_TEST_PYTHON to its interpreter; without it (a bare `cargo test`) the test says so and
//! skips, unless TUSK_REQUIRE_PYTHON is set (CI sets it, so a missing venv fails there).

mod common;

use std::time::Duration;

#[test]
fn confluent_kafka_and_kafka_python_round_trip() {
    let Ok(python) = std::env::var("TUSK_TEST_PYTHON") else {
        assert!(
            std::env::var("TUSK_REQUIRE_PYTHON").is_err(),
            "TUSK_REQUIRE_PYTHON is set but TUSK_TEST_PYTHON is not"
        );
        eprintln!("TUSK_TEST_PYTHON not set (run scripts/test.sh): skipping the Python clients");
        return;
    };
    let broker = common::Broker::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/clients.py");
    let out = common::run_with_timeout(
        std::process::Command::new(&python)
            .arg(script)
            .arg(broker.bootstrap()),
        None,
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "python clients failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("3 passed, 0 failed"), "{}", out.stdout);
}
