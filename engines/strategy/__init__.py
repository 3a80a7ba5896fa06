"""Strategy engine (port 8700): strategies, order intents, execution and the simulated venue."""
