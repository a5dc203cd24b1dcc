"""Command-line commands (see ``embedding_sanitizer.cli``)."""
