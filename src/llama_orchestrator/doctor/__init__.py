"""Config checks (lint, validate's deeper checks) and estimates: above config, engine, models and gpu."""
