"""Kaldi data directories: tables, validation and fixing, subsets, combining, bad-utterance lists, parallel-job merges."""
