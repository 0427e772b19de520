"""Runtime concerns every process shares: configuration, security, privacy, telemetry, metrics, the gRPC server."""
