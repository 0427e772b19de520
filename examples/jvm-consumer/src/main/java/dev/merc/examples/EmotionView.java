package dev.merc.examples;

import com.google.protobuf.InvalidProtocolBufferException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import merc.v1.Events.EmotionEvent;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;

/**
 * What a consumer of merc.emotions holds: the latest revision of each utterance, per conversation.
 * Pure (no Kafka connection), so its rules are tested alone (EmotionViewTest); {@link Consumer} only
 * feeds it records. The same rules as examples/consumer.py:
 *
 * <ul>
 *   <li>A record whose {@code schema} header is not {@value #SCHEMA} is not an event: skipped, never
 *       decoded (a foreign record on the topic must not stop the consumer).
 *   <li>The {@code tenant} header names the event's tenant, so other tenants' events are skipped
 *       without decoding them; it must equal the tenant inside the event.
 *   <li>An utterance is published once and again, with {@code revision + 1}, when a modality arrives
 *       after it was emitted: the highest revision wins, a lower or equal one (a redelivery) is stale.
 *   <li>A null value (a tombstone) under the key {@code tenant \0 conversation id} erases the
 *       conversation: everything held for it is dropped.
 * </ul>
 */
public final class EmotionView {
  /** The {@code schema} header of every event (merc.pipeline.events.SCHEMA). */
  public static final String SCHEMA = "merc.v1.EmotionEvent";

  /** What one record did to the view. */
  public enum Outcome {
    /** The first event held for its utterance. */
    EVENT,
    /** A higher revision replaced the one held. */
    REVISION,
    /** A revision at or below the one held (a redelivery, or out of date): ignored. */
    STALE,
    /** A tombstone: the conversation's events were dropped. */
    ERASED,
    /** Not ours to read (see reason). */
    SKIPPED
  }

  /** The outcome, why a record was skipped, and the event (when one was decoded). */
  public record Result(Outcome outcome, String reason, EmotionEvent event) {
    static Result skipped(String reason) {
      return new Result(Outcome.SKIPPED, reason, null);
    }
  }

  /** A record key: the tenant and the conversation id joined by a NUL byte. */
  public record ConversationKey(String tenant, String conversationId) {
    /** The key, or null for a key that is not a conversation key. */
    public static ConversationKey parse(byte[] key) {
      if (key == null) {
        return null;
      }
      String text = new String(key, StandardCharsets.UTF_8);
      int nul = text.indexOf('\0');
      return nul < 0 ? null : new ConversationKey(text.substring(0, nul), text.substring(nul + 1));
    }
  }

  private final String tenant;
  private final Map<ConversationKey, TreeMap<Integer, EmotionEvent>> held = new HashMap<>();

  /** @param tenant the only tenant whose records are read, or null for every tenant */
  public EmotionView(String tenant) {
    this.tenant = tenant;
  }

  public Result handle(byte[] key, byte[] value, Headers headers) {
    String tenantHeader = header(headers, "tenant");
    if (value == null) {
      return erase(key, tenantHeader);
    }
    String schema = header(headers, "schema");
    if (!SCHEMA.equals(schema)) {
      return Result.skipped(schema == null ? "no schema header" : "schema " + schema);
    }
    if (tenantHeader == null) {
      return Result.skipped("no tenant header");
    }
    if (tenant != null && !tenant.equals(tenantHeader)) {
      return Result.skipped("another tenant");
    }
    EmotionEvent event;
    try {
      event = EmotionEvent.parseFrom(value);
    } catch (InvalidProtocolBufferException e) {
      return Result.skipped("not an EmotionEvent: " + e.getMessage());
    }
    if (!event.getUtterance().getTenant().equals(tenantHeader)) {
      return Result.skipped("the tenant header differs from the event's tenant");
    }
    ConversationKey conversation =
        new ConversationKey(event.getUtterance().getTenant(), event.getUtterance().getConversationId());
    TreeMap<Integer, EmotionEvent> utterances = held.computeIfAbsent(conversation, k -> new TreeMap<>());
    EmotionEvent before = utterances.get(event.getUtterance().getSequence());
    if (before != null && before.getRevision() >= event.getRevision()) {
      return new Result(Outcome.STALE, "", event);
    }
    utterances.put(event.getUtterance().getSequence(), event);
    return new Result(before == null ? Outcome.EVENT : Outcome.REVISION, "", event);
  }

  private Result erase(byte[] key, String tenantHeader) {
    ConversationKey conversation = ConversationKey.parse(key);
    if (conversation == null) {
      return Result.skipped("a tombstone whose key is not a conversation key");
    }
    if (tenantHeader != null && !tenantHeader.equals(conversation.tenant())) {
      return Result.skipped("a tombstone whose tenant header differs from its key's tenant");
    }
    if (tenant != null && !tenant.equals(conversation.tenant())) {
      return Result.skipped("another tenant");
    }
    held.remove(conversation);
    return new Result(Outcome.ERASED, "", null);
  }

  /** The latest revision of each utterance of a conversation, in utterance order. */
  public List<EmotionEvent> latest(String tenant, String conversationId) {
    TreeMap<Integer, EmotionEvent> utterances = held.get(new ConversationKey(tenant, conversationId));
    return utterances == null ? List.of() : new ArrayList<>(utterances.values());
  }

  private static String header(Headers headers, String name) {
    Header h = headers.lastHeader(name);
    return h == null || h.value() == null ? null : new String(h.value(), StandardCharsets.UTF_8);
  }
}
