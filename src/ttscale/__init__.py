"""ttscale: scaling LLM test-time compute."""
__version__ = "0.1.0"
