"""Synthetic calibration corpus for the learned sanitizer (no dataset text; see ``wordlists``)."""
from .generator import CorpusGenerator, Sample, Segment, Term, char_trick, resolve_concepts
from .tokenized import ChunkSet, tokenize_samples
from .vocab import vocabulary_words

__all__ = ["CorpusGenerator", "Sample", "Segment", "Term", "char_trick", "resolve_concepts", "ChunkSet",
           "tokenize_samples", "vocabulary_words"]
