-- Market data: instruments, trades, quotes, bars.
--
-- Times are int64 nanoseconds since the Unix epoch (UTC): event_ns is the venue's event time,
-- receive_ns when we received it. Prices and sizes are double precision: 8 bytes, binary COPY
-- without decimal conversion (ingest rate), and exact enough for every venue we replay (SPY at
-- 1e-4, BTCUSDT at 1e-2 price / 1e-5 size are far inside float64's 15-16 significant digits).
-- Exact decimals come from instruments.price_precision / size_precision: round on display.
--
-- id is a per-table sequence, assigned in COPY order: the tie-breaker of the stable read order
-- (event_ns, id) and of keyset pagination. Partitioned tables index every partition the same:
-- BRIN on time (cheap range scans over days), btree (symbol, time, id) for per-symbol pages.

CREATE TABLE instruments (
    symbol text PRIMARY KEY,
    venue text NOT NULL,
    asset_class text NOT NULL,
    price_precision smallint NOT NULL CHECK (price_precision >= 0),
    size_precision smallint NOT NULL CHECK (size_precision >= 0),
    currency text NOT NULL
);

CREATE SEQUENCE trades_id_seq;
CREATE TABLE trades (
    id bigint NOT NULL DEFAULT nextval('trades_id_seq'),
    symbol text NOT NULL,
    event_ns bigint NOT NULL,
    receive_ns bigint NOT NULL,
    price double precision NOT NULL,
    size double precision NOT NULL,
    -- 1 = buyer was the aggressor, -1 = seller, NULL = unknown (e.g. Lean equity ticks).
    aggressor smallint CHECK (aggressor IN (-1, 1)),
    trade_id text,
    exchange text,
    condition text
) PARTITION BY RANGE (event_ns);
ALTER SEQUENCE trades_id_seq OWNED BY trades.id;
CREATE INDEX trades_event_ns_brin ON trades USING brin (event_ns);
CREATE INDEX trades_symbol_event_ns ON trades (symbol, event_ns, id);

CREATE SEQUENCE quotes_id_seq;
CREATE TABLE quotes (
    id bigint NOT NULL DEFAULT nextval('quotes_id_seq'),
    symbol text NOT NULL,
    event_ns bigint NOT NULL,
    receive_ns bigint NOT NULL,
    bid double precision NOT NULL,
    bid_size double precision NOT NULL,
    ask double precision NOT NULL,
    ask_size double precision NOT NULL
) PARTITION BY RANGE (event_ns);
ALTER SEQUENCE quotes_id_seq OWNED BY quotes.id;
CREATE INDEX quotes_event_ns_brin ON quotes USING brin (event_ns);
CREATE INDEX quotes_symbol_event_ns ON quotes (symbol, event_ns, id);

-- Bars are partitioned on start_ns; (symbol, spec, start_ns) is unique, and a bar written again
-- (a replay, a late correction) replaces the stored one (the writer upserts).
CREATE SEQUENCE bars_id_seq;
CREATE TABLE bars (
    id bigint NOT NULL DEFAULT nextval('bars_id_seq'),
    symbol text NOT NULL,
    spec text NOT NULL,
    start_ns bigint NOT NULL,
    end_ns bigint NOT NULL,
    open double precision NOT NULL,
    high double precision NOT NULL,
    low double precision NOT NULL,
    close double precision NOT NULL,
    volume double precision NOT NULL,
    dollar_volume double precision NOT NULL,
    trade_count bigint NOT NULL,
    CONSTRAINT bars_symbol_spec_start_ns UNIQUE (symbol, spec, start_ns)
) PARTITION BY RANGE (start_ns);
ALTER SEQUENCE bars_id_seq OWNED BY bars.id;
CREATE INDEX bars_start_ns_brin ON bars USING brin (start_ns);
