"""Collateral engine: margin calls, schedule IM, ISDA SIMM, collateral allocation."""
