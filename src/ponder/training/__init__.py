"""Embedded models: the tokenizer, the transformer, and their training recipes."""
