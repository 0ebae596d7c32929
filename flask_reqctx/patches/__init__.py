"""One module per library whose creation points are patched to carry the context."""
