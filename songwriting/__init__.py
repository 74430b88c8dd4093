"""Songwriting: phonology (syllables, stress, rhyme), lyric analysis, constrained generation (docs/songwriting.md)."""

from .phonology import Phonology, Pronunciation, Reading

__all__ = ["Phonology", "Pronunciation", "Reading"]
