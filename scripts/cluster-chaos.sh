#!/bin/sh
# The long cluster failover battery (not in npm test): kill -9 of the consumers' node during 20,000
# confirmed publishes and a 30 s SIGSTOP, against 3 brokers on a private redis-server with AOF.
# Prints the kill -9 ledger (sent, confirmed, received, lost, duplicated). Run `npm run build` first.
set -e
cd "$(dirname "$0")/.."
MQ_TEST_CLUSTER_MESSAGES=${MQ_TEST_CLUSTER_MESSAGES:-20000} MQ_TEST_CLUSTER_PAUSE_MS=${MQ_TEST_CLUSTER_PAUSE_MS:-30000} \
  node --test --test-timeout=600000 dist/test/e2e/cluster/failover.test.js
