"""Portfolio engine (port 8900): the exact ledger — fills in, ``positions.<account>`` and
``pnl.<account>`` out (``core`` the pure ledger, ``service`` the engine, ``api`` the REST)."""
