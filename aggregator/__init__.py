"""The gateway service: HTTP API, hosted Link page, region stores, workers, erasure."""
