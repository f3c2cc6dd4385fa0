"""What the webhook tells operators: metrics, logs, and the redaction of every line it writes."""
