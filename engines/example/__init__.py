"""The smallest real engine, kept as the worked example of ``engines/README.md``: session VWAP."""
