package dev.merc.examples;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import merc.v1.Events.EmotionEvent;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Reads merc.emotions and prints what each record changes. The rules are in {@link EmotionView};
 * this is only the loop.
 *
 * <pre>
 * java -cp 'target/jvm-consumer-1.jar:target/lib/*' dev.merc.examples.Consumer \
 *     --bootstrap 127.0.0.1:19092 [--topic merc.emotions] [--tenant T] [--group G]
 * </pre>
 *
 * Without --group it reads every partition from the beginning and commits nothing (the view lives
 * in memory, so it is rebuilt from the topic at each start). With --group it commits after each
 * batch it handled: a restart resumes there, and a batch redelivered after a crash is harmless
 * because a revision already held is ignored.
 */
public final class Consumer {
  private Consumer() {}

  public static void main(String[] args) {
    String bootstrap = "127.0.0.1:19092";
    String topic = "merc.emotions";
    String tenant = null;
    String group = null;
    for (int i = 0; i + 1 < args.length; i += 2) {
      switch (args[i]) {
        case "--bootstrap" -> bootstrap = args[i + 1];
        case "--topic" -> topic = args[i + 1];
        case "--tenant" -> tenant = args[i + 1];
        case "--group" -> group = args[i + 1];
        default -> throw new IllegalArgumentException("unknown option " + args[i]);
      }
    }
    Properties props = new Properties();
    props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    // Events are written in fusion's transactions: only committed ones are events.
    props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    if (group != null) {
      props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
    }
    EmotionView view = new EmotionView(tenant);
    try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
      if (group != null) {
        consumer.subscribe(List.of(topic));
      } else {
        List<TopicPartition> partitions = new ArrayList<>();
        for (PartitionInfo p : consumer.partitionsFor(topic)) {
          partitions.add(new TopicPartition(topic, p.partition()));
        }
        consumer.assign(partitions);
        consumer.seekToBeginning(partitions);
      }
      while (true) {
        for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
          print(r, view.handle(r.key(), r.value(), r.headers()));
        }
        if (group != null) {
          consumer.commitSync();
        }
      }
    }
  }

  private static void print(ConsumerRecord<byte[], byte[]> r, EmotionView.Result result) {
    String where = r.topic() + "[" + r.partition() + "]@" + r.offset();
    EmotionEvent e = result.event();
    switch (result.outcome()) {
      case SKIPPED -> System.err.println("skipped " + where + ": " + result.reason());
      case ERASED -> {
        EmotionView.ConversationKey k = EmotionView.ConversationKey.parse(r.key());
        System.out.println("erased " + k.tenant() + "/" + k.conversationId());
      }
      case STALE -> { }
      default -> System.out.printf("%s/%s#%d r%d %s %.2f%s%n", e.getUtterance().getTenant(),
          e.getUtterance().getConversationId(), e.getUtterance().getSequence(), e.getRevision(),
          e.getLabel(), e.getConfidence(), e.getDegraded() ? " degraded" : "");
    }
  }
}
