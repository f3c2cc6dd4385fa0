"""Kubernetes: the webhook's own client, typed API errors, the calls it makes, informers."""
