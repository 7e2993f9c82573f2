"""Gateway sources: read a gateway's model list and turn it into catalog records."""
