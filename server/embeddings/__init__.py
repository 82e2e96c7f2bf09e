"""The embedding refresh job: compute a model version's embeddings and publish them atomically."""
