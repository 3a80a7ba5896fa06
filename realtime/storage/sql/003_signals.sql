-- A generic table for the compute engines' outputs (VPIN, features, risk, ...): one row per
-- published value, the payload as jsonb. channel is the protocol channel (vpin.SPY), key the
-- entity it is about (a symbol, a portfolio), seq the bus sequence number on that channel.
CREATE SEQUENCE signals_id_seq;
CREATE TABLE signals (
    id bigint NOT NULL DEFAULT nextval('signals_id_seq'),
    engine text NOT NULL,
    channel text NOT NULL,
    key text NOT NULL,
    event_ns bigint NOT NULL,
    seq bigint NOT NULL,
    payload jsonb NOT NULL
) PARTITION BY RANGE (event_ns);
ALTER SEQUENCE signals_id_seq OWNED BY signals.id;
CREATE INDEX signals_event_ns_brin ON signals USING brin (event_ns);
CREATE INDEX signals_channel_event_ns ON signals (channel, event_ns, id);
CREATE INDEX signals_key_event_ns ON signals (key, event_ns);
