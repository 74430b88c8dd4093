"""Lyricist's HTTP service: the continuous-batching engine and the FastAPI app around it (docs/architecture.md)."""
