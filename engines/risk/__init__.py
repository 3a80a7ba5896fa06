"""Risk engine: pre-trade checks and portfolio risk (port 8200)."""
