-- Daily RANGE partitions on an int64 nanosecond column (event time, UTC days).
--
-- ensure_partitions(parent, first_day, last_day) creates <parent>_pYYYYMMDD for every UTC day in
-- [first_day, last_day] that does not exist yet, in the parent's own schema (so it works whatever
-- search_path the caller has), and returns how many it created. Bounds are
-- [day * 86400e9, (day + 1) * 86400e9) nanoseconds since the Unix epoch.
--
-- No DEFAULT partition: the writer calls this for every day present in a batch before it COPYs
-- the batch, so a row never needs one, and an empty DEFAULT partition would make every later
-- CREATE ... PARTITION OF scan it. A row outside every partition fails loudly instead.
CREATE OR REPLACE FUNCTION ensure_partitions(parent regclass, first_day date, last_day date)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    parent_schema text;
    parent_name text;
    partition_name text;
    day date := first_day;
    lower_ns bigint;
    created integer := 0;
BEGIN
    SELECT n.nspname, c.relname INTO parent_schema, parent_name
    FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.oid = parent;
    WHILE day <= last_day LOOP
        partition_name := parent_name || '_p' || to_char(day, 'YYYYMMDD');
        IF to_regclass(format('%I.%I', parent_schema, partition_name)) IS NULL THEN
            lower_ns := (day - date '1970-01-01')::bigint * 86400000000000;
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%s) TO (%s)',
                    parent_schema, partition_name, parent_schema, parent_name,
                    lower_ns, lower_ns + 86400000000000
                );
                created := created + 1;
            EXCEPTION WHEN duplicate_table OR unique_violation THEN
                -- Another writer created the same day concurrently: that is the goal reached.
                NULL;
            END;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END
$$;
