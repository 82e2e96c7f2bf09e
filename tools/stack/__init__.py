"""The local stack: ranker, Envoy and model servers on loopback ports, and the demo run."""
