"""Analytics engine (8100): performance statistics of return streams, streaming and batch."""
