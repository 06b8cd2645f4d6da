"""The OpenAI-compatible gateway: one address in front of every instance."""
