"""Operations: telemetry, metrics, retention, the admin command line."""
