"""Tests of the shared engine shell."""
