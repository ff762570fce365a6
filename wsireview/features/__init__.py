"""Patch embeddings: encoders and the per-slide feature store."""
