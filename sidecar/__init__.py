"""opencode-sidecar: keeps opencode's provider map in step with an LLM gateway."""

__version__ = "0.1.0"
