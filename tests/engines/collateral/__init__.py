"""Tests of the Collateral engine."""
