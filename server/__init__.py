"""What runs in a pod: the ranking front door (``ranking``), the TF-Serving-compatible model
server (``modelserver``), the embedding refresh job (``embeddings``) and the parts they share
(``common``: errors, health, shutdown; ``telemetry``: tracing and metrics)."""
