"""The pipeline's core, free of servers and client libraries: modality plug-ins, the encoder, the join, context, prediction, events."""
