#!/usr/bin/env bash
# Apache Kafka 4.x, KRaft, one node (broker + controller) on 127.0.0.1, jars from Maven
# Central (deploy/local/kafka/pom.xml, cached in ~/.m2); creates the merc.* topics.
#   kafka.sh start|stop|status
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
dir="$MERC_RUN_DIR/kafka"
log="$MERC_RUN_DIR/logs/kafka.log"
pidfile="$MERC_RUN_DIR/pids/kafka.pid"
# name:partitions:extra config
P=$MERC_TOPIC_PREFIX
TOPICS=(
  "$P.embeddings.text:$MERC_KAFKA_PARTITIONS:"
  "$P.embeddings.audio:$MERC_KAFKA_PARTITIONS:"
  "$P.embeddings.vision:$MERC_KAFKA_PARTITIONS:"
  "$P.emotions:$MERC_KAFKA_PARTITIONS:"
  "$P.fusion.state:$MERC_KAFKA_PARTITIONS:cleanup.policy=compact"
  "$P.dlq:1:"
)

running() { pidfile_alive "$pidfile" kafka.Kafka; }

fetch_jars() {
  local stamp
  stamp=$(sha256sum "$here/kafka/pom.xml" | cut -c1-16)
  if [ ! -f "$dir/libs/.$stamp" ]; then
    command -v mvn >/dev/null || apt_install maven
    echo "kafka: fetching jars with Maven (cached in ~/.m2)"
    rm -rf "$dir/libs" && mkdir -p "$dir/libs"
    "$REPO/deploy/retry.sh" mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$dir/libs" >>"$log" 2>&1 || die_with_log "kafka: mvn dependency:copy-dependencies failed" "$log"
    touch "$dir/libs/.$stamp"
  fi
}

# Short-lived tools (StorageTool, TopicCommand): small heap, quick JIT.
tool() {
  java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dlog4j2.configurationFile="$dir/log4j2-tools.properties" \
    -cp "$dir/libs/*" "$@"
}

configure() {
  mkdir -p "$dir/data"
  local bind=127.0.0.1
  [ "$MERC_STACK_HOST" = 127.0.0.1 ] || bind=0.0.0.0
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$MERC_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$bind:$MERC_KAFKA_PORT,CONTROLLER://127.0.0.1:$MERC_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$MERC_STACK_HOST:$MERC_KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=$MERC_KAFKA_PARTITIONS
default.replication.factor=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
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
  cat >"$dir/log4j2-tools.properties" <<'PROPS'
rootLogger.level=ERROR
rootLogger.appenderRef.stderr.ref=STDERR
appender.stderr.type=Console
appender.stderr.name=STDERR
appender.stderr.target=SYSTEM_ERR
appender.stderr.layout.type=PatternLayout
appender.stderr.layout.pattern=%p %m (%c)%n
PROPS
}

# The controller's address is written into the storage at format time (--standalone), so a
# data dir formatted for other ports is wiped and formatted again (local data only).
format_storage() {
  local want="controller=$MERC_KAFKA_CONTROLLER_PORT broker=$MERC_KAFKA_PORT"
  if [ -f "$dir/data/meta.properties" ] && [ "$(cat "$dir/data/.merc-ports" 2>/dev/null)" != "$want" ]; then
    echo "kafka: the storage in $dir/data was formatted for other ports or by an older setup; formatting it again (topics are recreated empty)"
    rm -rf "$dir/data" && mkdir -p "$dir/data"
  fi
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$(tool kafka.tools.StorageTool random-uuid 2>>"$log") || die_with_log "kafka: StorageTool random-uuid failed" "$log"
    tool kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$dir/server.properties" >>"$log" 2>&1 \
      || die_with_log "kafka: storage format failed" "$log"
    echo "$want" >"$dir/data/.merc-ports"
  fi
}

topics() { tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$MERC_KAFKA_PORT" "$@"; }

# Create the missing topics (one JVM per missing topic only).
create_topics() {
  local existing spec name parts cfg args
  existing=$TOPIC_LIST
  for spec in "${TOPICS[@]}"; do
    IFS=: read -r name parts cfg <<<"$spec"
    grep -qx -- "$name" <<<"$existing" && continue
    args=(--create --if-not-exists --topic "$name" --partitions "$parts" --replication-factor 1)
    [ -n "$cfg" ] && args+=(--config "$cfg")
    topics "${args[@]}" >>"$log" 2>&1 || die_with_log "kafka: creating topic $name failed" "$log"
  done
}

# Ready = the port accepts connections and the broker answers a metadata request
# (the topic list, kept in TOPIC_LIST for create_topics).
wait_ready() {
  wait_port "$MERC_KAFKA_PORT" 120 || die_with_log "kafka did not open port $MERC_KAFKA_PORT" "$log"
  local i
  for ((i = 0; i < 60; i++)); do
    TOPIC_LIST=$(topics --list 2>>"$log") && return 0
    running || die_with_log "kafka exited" "$log"
    sleep 1
  done
  die_with_log "kafka did not answer on port $MERC_KAFKA_PORT" "$log"
}

version() { ls "$dir/libs" 2>/dev/null | sed -n 's/^kafka_2\.13-\(.*\)\.jar$/\1/p' | head -1; }

start() {
  configure
  if running; then
    echo "kafka already running (pid $(cat "$pidfile"))"
  else
    rm -f "$pidfile"
    ensure_port_free kafka "$MERC_KAFKA_PORT" "$MERC_KAFKA_CONTROLLER_PORT"
    fetch_jars
    format_storage
    echo "=== $(date -Is) kafka start" >>"$log"
    nohup java -Xms256m -Xmx"$MERC_KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$MERC_RUN_DIR/logs" \
      -cp "$dir/libs/*" kafka.Kafka "$dir/server.properties" >>"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  wait_ready
  create_topics
  echo "kafka ready on $MERC_STACK_HOST:$MERC_KAFKA_PORT (Apache Kafka $(version), log $log)"
}

case "${1:-status}" in
  start) start ;;
  stop) stop_pidfile kafka "$pidfile" kafka.Kafka ;;
  status) if running; then echo "kafka running (pid $(cat "$pidfile"), 127.0.0.1:$MERC_KAFKA_PORT)"; else echo "kafka stopped"; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
