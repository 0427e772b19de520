"""The encoder program: one gRPC server, one modality plug-in per deployment (text, audio, vision)."""
