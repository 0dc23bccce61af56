"""Corpus layouts and downloads (MLS) and the code-switching test-set builder."""
