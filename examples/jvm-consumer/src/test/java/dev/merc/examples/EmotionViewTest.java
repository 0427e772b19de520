package dev.merc.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.merc.examples.EmotionView.Outcome;
import java.nio.charset.StandardCharsets;
import java.util.List;
import merc.v1.Common.UtteranceRef;
import merc.v1.Events.EmotionEvent;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.junit.jupiter.api.Test;

class EmotionViewTest {
  private static byte[] key(String tenant, String conversation) {
    return (tenant + "\0" + conversation).getBytes(StandardCharsets.UTF_8);
  }

  private static Headers headers(String... pairs) {
    RecordHeaders h = new RecordHeaders();
    for (int i = 0; i < pairs.length; i += 2) {
      h.add(pairs[i], pairs[i + 1].getBytes(StandardCharsets.UTF_8));
    }
    return h;
  }

  private static Headers eventHeaders(String tenant) {
    return headers("schema", EmotionView.SCHEMA, "tenant", tenant);
  }

  private static byte[] event(String tenant, String conversation, int sequence, int revision, String label) {
    return EmotionEvent.newBuilder()
        .setUtterance(UtteranceRef.newBuilder().setTenant(tenant).setConversationId(conversation).setSequence(sequence))
        .setRevision(revision)
        .setLabel(label)
        .build()
        .toByteArray();
  }

  @Test
  void keepsTheLatestRevisionOfEachUtterance() {
    EmotionView view = new EmotionView(null);
    assertEquals(Outcome.EVENT, view.handle(key("acme", "c1"), event("acme", "c1", 0, 0, "neutral"), eventHeaders("acme")).outcome());
    assertEquals(Outcome.EVENT, view.handle(key("acme", "c1"), event("acme", "c1", 1, 0, "joy"), eventHeaders("acme")).outcome());
    assertEquals(Outcome.REVISION, view.handle(key("acme", "c1"), event("acme", "c1", 1, 1, "anger"), eventHeaders("acme")).outcome());
    // A redelivery of revision 0 after revision 1: stale.
    assertEquals(Outcome.STALE, view.handle(key("acme", "c1"), event("acme", "c1", 1, 0, "joy"), eventHeaders("acme")).outcome());
    List<EmotionEvent> held = view.latest("acme", "c1");
    assertEquals(List.of("neutral", "anger"), held.stream().map(EmotionEvent::getLabel).toList());
  }

  @Test
  void skipsForeignRecordsWithoutFailing() {
    EmotionView view = new EmotionView(null);
    byte[] k = key("acme", "c1");
    assertEquals(Outcome.SKIPPED, view.handle(k, "committed".getBytes(StandardCharsets.UTF_8), new RecordHeaders()).outcome());
    assertEquals(Outcome.SKIPPED, view.handle(k, event("acme", "c1", 0, 0, "joy"), headers("schema", "merc.v1.ModalityEmbedding", "tenant", "acme")).outcome());
    assertEquals(Outcome.SKIPPED, view.handle(k, new byte[] {8, (byte) 0xff, (byte) 0xff}, eventHeaders("acme")).outcome());
    assertEquals(Outcome.SKIPPED, view.handle(k, event("acme", "c1", 0, 0, "joy"), eventHeaders("mallory")).outcome());
    assertTrue(view.latest("acme", "c1").isEmpty());
  }

  @Test
  void aTombstoneErasesItsConversationOnly() {
    EmotionView view = new EmotionView(null);
    view.handle(key("acme", "c1"), event("acme", "c1", 0, 0, "joy"), eventHeaders("acme"));
    view.handle(key("other", "c1"), event("other", "c1", 0, 0, "fear"), eventHeaders("other"));
    assertEquals(Outcome.ERASED, view.handle(key("acme", "c1"), null, headers("tenant", "acme", "erased", "1")).outcome());
    assertTrue(view.latest("acme", "c1").isEmpty());
    assertEquals(1, view.latest("other", "c1").size());
    assertEquals(Outcome.SKIPPED, view.handle("no-nul".getBytes(StandardCharsets.UTF_8), null, new RecordHeaders()).outcome());
  }

  @Test
  void readsOneTenantWhenAsked() {
    EmotionView view = new EmotionView("acme");
    assertEquals(Outcome.SKIPPED, view.handle(key("other", "c1"), event("other", "c1", 0, 0, "joy"), eventHeaders("other")).outcome());
    assertEquals(Outcome.SKIPPED, view.handle(key("other", "c1"), null, headers("tenant", "other")).outcome());
    assertEquals(Outcome.EVENT, view.handle(key("acme", "c1"), event("acme", "c1", 0, 0, "joy"), eventHeaders("acme")).outcome());
  }
}
