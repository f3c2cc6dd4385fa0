"""Serving: the aiohttp app, transport limits, TLS reload, worker processes."""
