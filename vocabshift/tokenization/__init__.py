"""Tokenizers: training, surface forms, Unicode scripts, and vocabulary statistics."""
