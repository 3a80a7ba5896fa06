"""Load tests: the WebSocket fan-out benchmark (``python -m loadtest.fanout``), see README.md."""
