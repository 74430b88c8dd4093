"""Lyricist's HTTP service: the continuous-batching engine and the FastAPI app around it (API.md)."""
