-- Ledger of committed writer batches, for exactly-once retries.
--
-- The writer inserts its batch id in the same transaction as the batch's COPY. When a commit
-- succeeded but its acknowledgement was lost (the connection died after COMMIT), the retry finds
-- the id already here and skips the batch instead of writing it twice. One row per batch
-- (thousands of data rows); rows older than any possible retry can be deleted at will.
CREATE TABLE write_batches (
    batch_id uuid PRIMARY KEY,
    table_name text NOT NULL,
    row_count integer NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
