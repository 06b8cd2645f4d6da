"""Config checks and the configured estimate: above config, engine, models and gpu."""
