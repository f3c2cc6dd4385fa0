"""Pull secrets in the cluster: ensure a fresh one per need, the records, the Secret's shape."""
