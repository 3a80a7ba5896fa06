"""MarketData engine: feeds, normalized records, order books and bars (port 8800)."""
