#!/bin/bash
# kafka-run-class.sh CLASS [ARGS]: Apache's launcher, cut to what the compose test uses. The tools
# (everything but the broker) start with a small heap and the quick JIT: they are the healthcheck,
# which must answer within its 5 s on a small shared machine.
set -euo pipefail
home=/opt/kafka
heap=${KAFKA_HEAP_OPTS:--Xmx256M}
perf=${KAFKA_JVM_PERFORMANCE_OPTS:--XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true}
log4j=${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$home/config/tools-log4j2.properties}
# shellcheck disable=SC2086 # the *_OPTS are word lists, as in Apache's script
exec java $heap $perf $log4j ${KAFKA_OPTS:-} -cp "$home/libs/*" "$@"
