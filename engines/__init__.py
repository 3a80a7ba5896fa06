"""Compute engines: one subpackage per engine (core.py, service.py, api.py) and the shared shell."""
