"""Core types and protocols (imports nothing concrete)."""
