"""Drive a running tusk broker with the Python clients: confluent-kafka (librdkafka 2.16) and
kafka-python. Usage: clients.py BOOTSTRAP. Exits non-zero on the first failed check and prints
'N passed, N failed' at the end."""

import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTopicPartition
from kafka.admin import KafkaAdminClient, NewTopic as KNewTopic

BOOTSTRAP = sys.argv[1]
COUNT = 2000
results = {"passed": 0, "failed": 0}


def check(name, fn):
    try:
        fn()
        results["passed"] += 1
        print(f"ok   {name}")
    except Exception as e:  # noqa: BLE001 - report every failure the same way
        results["failed"] += 1
        print(f"FAIL {name}: {e!r}")


def confluent_round_trip():
    topic = f"py-confluent-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for f in admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)]).values():
        f.result(timeout=30)
    acked = []
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "enable.idempotence": True,
                         "compression.type": "lz4", "linger.ms": 5})
    for i in range(COUNT):
        producer.produce(topic, key=f"k{i % 17}", value=str(i),
                         on_delivery=lambda err, msg: acked.append((err, msg.partition(), msg.offset())))
        producer.poll(0)
    assert producer.flush(30) == 0, "undelivered records after flush"
    errors = [a for a in acked if a[0] is not None]
    assert not errors, f"delivery errors: {errors[:3]}"
    assert len(acked) == COUNT, f"acked {len(acked)} of {COUNT}"
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "py-confluent",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    seen = {}
    deadline = time.time() + 30
    while sum(len(v) for v in seen.values()) < COUNT and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        seen.setdefault(msg.key().decode(), []).append(int(msg.value()))
    consumer.close()
    total = sum(len(v) for v in seen.values())
    assert total == COUNT, f"consumed {total} of {COUNT}"
    for key, values in seen.items():
        assert values == sorted(values), f"key {key} out of order"
    md = admin.list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == 3, "metadata shows 3 partitions"


def kafka_python_round_trip():
    topic = f"py-kafka-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=30000)
    admin.create_topics([KNewTopic(topic, num_partitions=2, replication_factor=1)])
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5,
                             compression_type="gzip")
    futures = [producer.send(topic, key=f"k{i % 5}".encode(), value=str(i).encode()) for i in range(COUNT)]
    producer.flush(timeout=30)
    metas = [f.get(timeout=30) for f in futures]
    assert len(metas) == COUNT
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    parts = [KTopicPartition(topic, p) for p in range(2)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    got = [int(m.value) for m in consumer]
    assert sorted(got) == list(range(COUNT)), f"consumed {len(got)} of {COUNT}"
    ends = consumer.end_offsets(parts)
    assert sum(ends.values()) == COUNT, f"end offsets {ends}"
    # offsets_for_times: a timestamp far in the past maps to offset 0.
    found = consumer.offsets_for_times({parts[0]: 0})
    assert found[parts[0]] is not None and found[parts[0]].offset == 0, f"offsets_for_times {found}"
    consumer.close()
    admin.delete_topics([topic])
    admin.close()


def kafka_python_group():
    topic = f"py-group-{uuid.uuid4().hex[:8]}"
    group = f"py-group-{uuid.uuid4().hex[:8]}"
    count = 200
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=30000)
    admin.create_topics([KNewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    futures = [producer.send(topic, value=str(i).encode(), partition=i % 2) for i in range(count)]
    producer.flush(timeout=30)
    for f in futures:
        f.get(timeout=30)
    producer.close()
    parts = [KTopicPartition(topic, p) for p in range(2)]
    settings = dict(bootstrap_servers=BOOTSTRAP, group_id=group, auto_offset_reset="earliest",
                    enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=500)

    # First member: everything, then a synchronous commit of its positions.
    consumer = KafkaConsumer(topic, **settings)
    got = []
    deadline = time.time() + 30
    while len(got) < count and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(int(r.value) for r in records)
    assert sorted(got) == list(range(count)), f"first member consumed {len(got)} of {count}"
    consumer.commit()
    committed = {tp.partition: consumer.committed(tp) for tp in parts}
    assert committed == {0: count // 2, 1: count // 2}, f"committed {committed}"
    consumer.close()

    # Second member of the same group: once it owns both partitions, it resumes at the
    # committed end and gets nothing within 3 s.
    consumer = KafkaConsumer(topic, consumer_timeout_ms=3000, **settings)
    deadline = time.time() + 30
    extra = []
    while len(consumer.assignment()) < 2 and time.time() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            extra.extend(int(r.value) for r in records)
    assert len(consumer.assignment()) == 2, f"second member owns {consumer.assignment()}"
    extra.extend(int(m.value) for m in consumer)  # iterates until 3 s without a record
    positions = {tp.partition: consumer.position(tp) for tp in parts}
    consumer.close()
    assert not extra, f"second member re-read {len(extra)} records, e.g. {extra[:5]}"
    assert positions == {0: count // 2, 1: count // 2}, f"positions {positions}"


check("confluent-kafka (librdkafka 2.16): create, idempotent lz4 produce, consume, metadata",
      confluent_round_trip)
check("kafka-python: create, gzip produce, consume, end offsets, offsets_for_times, delete",
      kafka_python_round_trip)
check("kafka-python: consumer group, commit, close, second member resumes at the commit",
      kafka_python_group)
print(f"{results['passed']} passed, {results['failed']} failed")
sys.exit(1 if results["failed"] else 0)
