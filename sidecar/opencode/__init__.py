"""Everything that touches opencode: its config file, its process and its HTTP API."""
