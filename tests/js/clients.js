// Drive a running tusk broker (or cluster) with KafkaJS, a third independent implementation of
// the protocol and of the group client (pure JavaScript; no librdkafka). Usage:
//   node clients.js BOOTSTRAP
// BOOTSTRAP is one address: in a cluster, KafkaJS must find every other broker from it.
// Prints 'N passed, N failed' at the end and exits non-zero if any check failed.
'use strict';

const { Kafka, logLevel } = require('kafkajs');
const crypto = require('crypto');

const BOOTSTRAP = process.argv[2];
if (!BOOTSTRAP) {
  console.error('usage: clients.js BOOTSTRAP');
  process.exit(2);
}
const COUNT = 600;
const results = { passed: 0, failed: 0 };
const kafka = new Kafka({
  clientId: 'tusk-kafkajs',
  brokers: [BOOTSTRAP],
  logLevel: logLevel.NOTHING,
  retry: { retries: 10, initialRetryTime: 200 },
});

function suffix() {
  return crypto.randomBytes(4).toString('hex');
}

function assert(ok, message) {
  if (!ok) throw new Error(message);
}

async function check(name, fn) {
  try {
    await fn();
    results.passed += 1;
    console.log(`ok   ${name}`);
  } catch (e) {
    results.failed += 1;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

// Create (replication factor left to the broker), produce idempotently with acks=all,
// and read everything back through a consumer group that commits, on every partition.
async function roundTrip() {
  const topic = `js-${suffix()}`;
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: 6 }],
    waitForLeaders: true,
  });
  assert(created, `createTopics(${topic}) reported nothing created`);
  const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
  const partitions = metadata.topics[0].partitions;
  assert(partitions.length === 6, `metadata lists ${partitions.length} partitions`);

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (let i = 0; i < COUNT; i += 50) {
    const messages = [];
    for (let j = i; j < i + 50; j += 1) {
      messages.push({ key: `k${j % 13}`, value: String(j), partition: j % 6 });
    }
    await producer.send({ topic, acks: -1, messages });
  }
  await producer.disconnect();

  const offsets = await admin.fetchTopicOffsets(topic);
  const total = offsets.reduce((sum, p) => sum + Number(p.high), 0);
  assert(total === COUNT, `high watermarks sum to ${total}, expected ${COUNT}`);

  const groupId = `js-group-${suffix()}`;
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const seen = new Set();
  const perPartition = new Map();
  let done;
  const all = new Promise((resolve) => { done = resolve; });
  await consumer.run({
    autoCommit: true,
    autoCommitInterval: 200,
    eachMessage: async ({ partition, message }) => {
      const value = Number(message.value.toString());
      seen.add(value);
      const last = perPartition.get(partition);
      assert(last === undefined || Number(message.offset) === last + 1,
        `partition ${partition}: offset ${message.offset} after ${last}`);
      perPartition.set(partition, Number(message.offset));
      if (seen.size === COUNT) done();
    },
  });
  const timeout = new Promise((_, reject) => setTimeout(
    () => reject(new Error(`consumed ${seen.size} of ${COUNT} within 60 s`)), 60000));
  await Promise.race([all, timeout]);
  await consumer.commitOffsets(
    [...perPartition.entries()].map(([partition, offset]) => (
      { topic, partition, offset: String(offset + 1) })));
  await consumer.disconnect();

  const committed = await admin.fetchOffsets({ groupId, topics: [topic] });
  const sum = committed[0].partitions.reduce((s, p) => s + Number(p.offset), 0);
  assert(sum === COUNT, `the group committed ${sum} of ${COUNT}`);
  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
}

// The cluster as KafkaJS sees it from one bootstrap address.
async function describeCluster() {
  const admin = kafka.admin();
  await admin.connect();
  const cluster = await admin.describeCluster();
  assert(cluster.brokers.length >= 1, 'describeCluster lists no broker');
  assert(cluster.brokers.some((b) => b.nodeId === cluster.controller),
    `controller ${cluster.controller} is not among ${JSON.stringify(cluster.brokers)}`);
  console.log(`brokers ${cluster.brokers.map((b) => b.nodeId).join(',')} controller ${cluster.controller}`);
  await admin.disconnect();
}

(async () => {
  await check('kafkajs: describe cluster, controller among the brokers', describeCluster);
  await check('kafkajs: create, idempotent acks=all produce, group consume, commit, delete', roundTrip);
  console.log(`${results.passed} passed, ${results.failed} failed`);
  process.exit(results.failed ? 1 : 0);
})();
