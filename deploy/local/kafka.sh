#!/usr/bin/env bash
# Apache Kafka 4.x, KRaft, one node on 127.0.0.1, jars from Maven Central (deploy/local/kafka/pom.xml).
#   kafka.sh start|stop|status
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
dir="$MERC_RUN_DIR/kafka"
log="$MERC_RUN_DIR/logs/kafka.log"
pidfile="$MERC_RUN_DIR/pids/kafka.pid"
TOPICS=(embeddings.text embeddings.audio embeddings.vision emotions fusion.state)

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

fetch_jars() {
  local stamp
  stamp=$(sha256sum "$here/kafka/pom.xml" | cut -c1-16)
  if [ ! -f "$dir/libs/.$stamp" ]; then
    command -v mvn >/dev/null || { apt-get update -qq && apt-get install -y -qq maven; }
    rm -rf "$dir/libs" && mkdir -p "$dir/libs"
    # ~/.m2 caches the download for the next run.
    mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$dir/libs"
    touch "$dir/libs/.$stamp"
  fi
}

java_cmd() { java -Xms256m -Xmx512m -XX:+UseG1GC -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$dir/libs/*" "$@"; }

configure() {
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$MERC_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$MERC_KAFKA_PORT,CONTROLLER://127.0.0.1:$MERC_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$MERC_KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=$MERC_KAFKA_PARTITIONS
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
  cat >"$dir/log4j2.properties" <<'PROPS'
rootLogger.level=WARN
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.server.name=kafka.server.KafkaRaftServer
logger.server.level=INFO
PROPS
}

topics() { java_cmd org.apache.kafka.tools.TopicCommand --bootstrap-server "$MERC_KAFKA_BOOTSTRAP" "$@"; }

create_topics() {
  local t cfg
  for t in "${TOPICS[@]}"; do
    cfg=()
    [ "$t" = fusion.state ] && cfg=(--config cleanup.policy=compact)
    topics --create --if-not-exists --topic "merc.$t" --partitions "$MERC_KAFKA_PARTITIONS" --replication-factor 1 "${cfg[@]}" >/dev/null
  done
  topics --create --if-not-exists --topic merc.dlq --partitions 1 --replication-factor 1 >/dev/null
}

start() {
  if running; then echo "kafka already running (pid $(cat "$pidfile"))"; return; fi
  fetch_jars
  configure
  if [ ! -f "$dir/data/meta.properties" ]; then
    java_cmd kafka.tools.StorageTool format --standalone -t "$(java_cmd kafka.tools.StorageTool random-uuid)" -c "$dir/server.properties" >>"$log" 2>&1 \
      || die_with_log "kafka storage format failed" "$log"
  fi
  nohup java -Xms256m -Xmx768m -XX:+UseG1GC -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$MERC_RUN_DIR/logs" \
    -cp "$dir/libs/*" kafka.Kafka "$dir/server.properties" >>"$log" 2>&1 &
  echo $! >"$pidfile"
  wait_port "$MERC_KAFKA_PORT" 90 || die_with_log "kafka did not open port $MERC_KAFKA_PORT" "$log"
  local i
  for i in $(seq 1 60); do
    topics --list >/dev/null 2>&1 && break
    running || die_with_log "kafka exited" "$log"
    sleep 1
  done
  create_topics
  echo "kafka ready on $MERC_KAFKA_BOOTSTRAP ($(ls "$dir/libs" | grep -o 'kafka_2.13-[0-9.]*[0-9]' | head -1))"
}

stop() {
  stop_pidfile kafka "$pidfile"
}

case "${1:-status}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "kafka running (pid $(cat "$pidfile"))"; else echo "kafka stopped"; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
