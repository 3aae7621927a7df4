#!/bin/sh
# dns-worker.sh - the worker wrapper of it_broker_dns: the worker finds its broker by DNS,
# FERRULE_BROKER_BACKENDS=dns+tcp://brokers.ferrule.test:PORT in place of the harness's
# tcp://127.0.0.1:PORT, through the preloaded test resolver (slow_dns.c).
set -eu
port=${FERRULE_BROKER_BACKENDS##*:}
FERRULE_BROKER_BACKENDS="dns+tcp://brokers.ferrule.test:$port"
LD_PRELOAD="$FERRULE_TEST_DNS_PRELOAD${LD_PRELOAD:+:$LD_PRELOAD}"
export FERRULE_BROKER_BACKENDS LD_PRELOAD
exec "$@"
