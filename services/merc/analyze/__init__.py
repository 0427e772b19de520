"""`merc analyze`: manifests and bare recordings, embedded (one process) or through a running gateway."""
