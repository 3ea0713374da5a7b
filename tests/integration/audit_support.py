"""The audit tests' keys (the writer's signing key and the producers' record key)."""

KEY = b"test-audit-key"
RECORD_KEY = b"test-audit-record-key"
