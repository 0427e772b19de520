"""The fusion/context service: join per utterance, causal context, fusion model, events on Kafka."""
