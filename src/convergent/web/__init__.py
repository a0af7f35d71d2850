"""The web side of an agent: its dashboard and its Prometheus metrics."""
