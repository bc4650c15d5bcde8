-- Resumable bulk import into a memory table: memfdw.import, memfdw.import_resume and
-- the memfdw.import_jobs table (see fdw/src/import.rs).

CREATE TABLE memfdw.import_jobs (
    job bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner name NOT NULL DEFAULT current_user,
    target regclass NOT NULL,
    query text NOT NULL,
    -- The search_path the query was given with (it is parsed again on resume).
    search_path text NOT NULL DEFAULT current_setting('search_path'),
    -- Columns of the query's rows that order them and identify each one: batches
    -- continue after the last key committed.
    order_by text NOT NULL,
    on_duplicate text NOT NULL CHECK (on_duplicate IN ('error', 'skip', 'record')),
    batch_rows integer NOT NULL CHECK (batch_rows > 0),
    -- Where 'record' puts the rows it did not load.
    conflicts regclass,
    state text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'failed')),
    last_key jsonb,
    rows_done bigint NOT NULL DEFAULT 0,
    rows_skipped bigint NOT NULL DEFAULT 0,
    batches bigint NOT NULL DEFAULT 0,
    estimated_total bigint,
    error text,
    started timestamptz NOT NULL DEFAULT now(),
    updated timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE memfdw.import_jobs IS 'memfdw.import jobs: progress after each committed batch';
-- Everyone may start jobs and sees, resumes and removes only their own.
ALTER TABLE memfdw.import_jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_jobs ON memfdw.import_jobs
    USING (owner = current_user) WITH CHECK (owner = current_user);
GRANT SELECT, INSERT, UPDATE, DELETE ON memfdw.import_jobs TO PUBLIC;

CREATE VIEW memfdw.import_progress WITH (security_invoker = true) AS
SELECT job, target, state, rows_done, rows_skipped, batches, estimated_total,
       round(rows_done / greatest(extract(epoch FROM updated - started), 0.001)) AS rows_per_second,
       CASE WHEN estimated_total > 0
            THEN round(100.0 * least(rows_done + rows_skipped, estimated_total) / estimated_total, 1)
       END AS percent_estimated,
       started, updated, error
  FROM memfdw.import_jobs;
GRANT SELECT ON memfdw.import_progress TO PUBLIC;

-- The session settings every batch of job `j` runs under (until its COMMIT): the
-- job's search_path (the query is parsed and run with it), and settings under which
-- key values round-trip exactly through the jsonb of the job's position.
CREATE FUNCTION memfdw._import_settings(j memfdw.import_jobs)
RETURNS void LANGUAGE sql AS $$
    SELECT pg_catalog.set_config('search_path', j.search_path, true),
           pg_catalog.set_config('extra_float_digits', '3', true),
           pg_catalog.set_config('IntervalStyle', 'iso_8601', true),
           pg_catalog.set_config('DateStyle', 'ISO, MDY', true);
$$;

-- Drops job `job_id`'s view of its query in this session, if there is one.
CREATE FUNCTION memfdw._import_drop_view(job_id bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF pg_catalog.to_regclass(format('pg_temp.memfdw_import_%s', job_id)) IS NOT NULL THEN
        EXECUTE format('DROP VIEW pg_temp.memfdw_import_%s', job_id);
    END IF;
END
$$;

-- Sets up job `j` in this session: the query's rows as a temporary view (its row type
-- names the key columns for the batches' comparisons), parsed with the job's
-- search_path; returns the SQL of one batch. Fails for an order_by that does not
-- name columns of the query.
CREATE FUNCTION memfdw._import_batch_sql(j memfdw.import_jobs)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    src text := format('pg_temp.memfdw_import_%s', j.job);
    target text;
    conflicts text;
    vcols text;
    skeys text;
    bkeys text;
    rkeys text;
    desc_keys text;
    null_keys text;
    tkeys text;
    rec_cte text;
BEGIN
    PERFORM memfdw._import_settings(j);
    IF pg_catalog.to_regclass(src) IS NOT NULL THEN
        EXECUTE format('DROP VIEW %s', src);
    END IF;
    EXECUTE format('CREATE TEMP VIEW %s AS %s', src, j.query);
    -- Tables by schema and name: the SQL is run after COMMITs, under any search_path.
    SELECT format('%I.%I', n.nspname, c.relname) INTO target
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = j.target;
    SELECT format('%I.%I', n.nspname, c.relname) INTO conflicts
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = j.conflicts;
    SELECT string_agg(format('s.%I', a.attname), ', ' ORDER BY a.attnum) INTO vcols
      FROM pg_catalog.pg_attribute a WHERE a.attrelid = src::regclass AND a.attnum > 0;
    SELECT string_agg(format('s.%I', k), ', ' ORDER BY o),
           string_agg(format('b.%I', k), ', ' ORDER BY o),
           string_agg(format('r.%I', k), ', ' ORDER BY o),
           string_agg(format('s.%I DESC', k), ', ' ORDER BY o),
           string_agg(format('s.%I IS NULL', k), ' OR ' ORDER BY o)
      INTO skeys, bkeys, rkeys, desc_keys, null_keys
      FROM unnest(string_to_array(j.order_by, ',')) WITH ORDINALITY u(k0, o),
           LATERAL (SELECT btrim(k0, ' "') AS k) x;
    -- The target's columns at the key columns' positions (rows go in by position).
    SELECT string_agg(format('t.%I', ta.attname), ', ' ORDER BY u.o)
      INTO tkeys
      FROM unnest(string_to_array(j.order_by, ',')) WITH ORDINALITY u(k0, o)
      JOIN pg_catalog.pg_attribute va ON va.attrelid = src::regclass AND va.attname = btrim(u.k0, ' "')
      JOIN LATERAL (
          SELECT a.attname FROM pg_catalog.pg_attribute a
           WHERE a.attrelid = j.target AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attnum OFFSET va.attnum - 1 LIMIT 1) ta ON true;
    IF tkeys IS NULL OR array_length(string_to_array(tkeys, ','), 1)
                        <> array_length(string_to_array(j.order_by, ','), 1) THEN
        RAISE EXCEPTION 'order_by "%" does not name columns of the query', j.order_by
            USING ERRCODE = '42703';
    END IF;
    -- Rows the target did not take, with their keys (on_duplicate = 'record').
    rec_cte := CASE WHEN j.on_duplicate = 'record' THEN format(
        'rec AS (INSERT INTO %s (job, key, "row") '
        '  SELECT $3, (SELECT to_jsonb(k) FROM (SELECT %s) k), to_jsonb(b) FROM b '
        '   WHERE NOT EXISTS (SELECT FROM ins t WHERE (%s) = (%s)) RETURNING 1)',
        conflicts, bkeys, tkeys, bkeys)
        ELSE 'rec AS (SELECT 1 WHERE false)' END;
    -- One batch: the next batch_rows rows after the last key (one more is read to
    -- check that the batch ends between two keys), loaded. Returns the rows read and
    -- loaded, the batch's last key, the rows recorded, how many keys the rows read
    -- share (order_by must identify rows) and how many are NULL.
    RETURN format(
        'WITH b1 AS MATERIALIZED (SELECT * FROM %1$s s WHERE $1::jsonb IS NULL OR (%2$s) > '
        '    (SELECT %3$s FROM jsonb_populate_record(NULL::%1$s, $1) r) ORDER BY %2$s LIMIT $2 + 1), '
        'b1n AS (SELECT s.*, row_number() OVER (ORDER BY %2$s) AS memfdw_import_rn FROM b1 s), '
        'b AS (SELECT %9$s FROM b1n s WHERE memfdw_import_rn <= $2), '
        'ins AS (INSERT INTO %4$s AS t SELECT * FROM b %5$s RETURNING %6$s), '
        '%7$s '
        'SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM ins), '
        '       (SELECT to_jsonb(x) FROM (SELECT %2$s FROM b s ORDER BY %8$s LIMIT 1) x), '
        '       (SELECT count(*) FROM rec), '
        '       (SELECT count(*) - count(DISTINCT ROW(%2$s)) FROM b1 s), '
        '       (SELECT count(*) FROM b1 s WHERE %10$s)',
        src, skeys, rkeys, target,
        CASE WHEN j.on_duplicate = 'error' THEN '' ELSE 'ON CONFLICT DO NOTHING' END,
        tkeys, rec_cte, desc_keys, vcols, null_keys);
END
$$;

-- Runs job `job_id` to the end, one committed batch at a time (see fdw/src/import.rs).
-- (Procedures that commit cannot have a SET clause: these run with the caller's
-- search_path, as the query does.)
CREATE PROCEDURE memfdw.import_resume(job_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    j memfdw.import_jobs;
    batch_sql text;
    n_read bigint;
    n_loaded bigint;
    next_key jsonb;
    n_recorded bigint;
    n_shared bigint;
    n_null bigint;
    failed_state text;
    failed_msg text;
    failed_detail text;
    failed_hint text;
    last_notice timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO j FROM memfdw.import_jobs WHERE job = job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'import job % does not exist', job_id USING ERRCODE = '42704',
            HINT = 'memfdw.import_jobs lists your jobs.';
    END IF;
    -- Even a superuser (who sees every job) resumes only their own: the job runs its
    -- owner's SQL.
    IF j.owner <> current_user THEN
        RAISE EXCEPTION 'import job % belongs to %', job_id, j.owner USING ERRCODE = '42501';
    END IF;
    IF j.state = 'done' THEN
        RAISE NOTICE 'import job % is done: % rows', job_id, j.rows_done;
        RETURN;
    END IF;
    IF NOT pg_catalog.pg_has_role((SELECT relowner FROM pg_catalog.pg_class WHERE oid = j.target), 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', j.target USING ERRCODE = '42501';
    END IF;
    batch_sql := memfdw._import_batch_sql(j);
    LOOP
        -- This job's row, locked until the batch commits: two sessions resuming one
        -- job take turns, each batch starting after the last one committed.
        SELECT * INTO j FROM memfdw.import_jobs WHERE job = job_id FOR UPDATE;
        EXIT WHEN j.state = 'done';
        PERFORM memfdw._import_settings(j);
        failed_state := NULL;
        BEGIN
            EXECUTE batch_sql INTO n_read, n_loaded, next_key, n_recorded, n_shared, n_null
                USING j.last_key, j.batch_rows, job_id;
            IF n_null = 0 AND n_read < j.batch_rows THEN
                -- The last batch: rows whose key is NULL were never after a key.
                EXECUTE format('SELECT count(*) FROM pg_temp.memfdw_import_%s s WHERE %s', job_id,
                               (SELECT string_agg(format('s.%I IS NULL', btrim(k, ' "')), ' OR ')
                                  FROM unnest(string_to_array(j.order_by, ',')) k))
                   INTO n_null;
            END IF;
            IF n_null > 0 THEN
                RAISE EXCEPTION 'order_by column of import job % is NULL in % rows', job_id, n_null
                    USING ERRCODE = '22004',
                          HINT = 'order_by must name columns that order the rows and identify each one.';
            END IF;
            IF n_shared > 0 THEN
                RAISE EXCEPTION 'order_by "%" does not identify the rows of import job %', j.order_by, job_id
                    USING ERRCODE = '22023',
                          HINT = 'Rows share a key: order by columns that identify each row.';
            END IF;
        EXCEPTION WHEN OTHERS THEN
            -- (A cancel is not caught: the job stays where its last batch left it.)
            GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE,
                                    failed_msg = MESSAGE_TEXT,
                                    failed_detail = PG_EXCEPTION_DETAIL,
                                    failed_hint = PG_EXCEPTION_HINT;
        END;
        IF failed_state IS NOT NULL THEN
            UPDATE memfdw.import_jobs
               SET state = 'failed', error = failed_msg, updated = clock_timestamp()
             WHERE job = job_id;
            COMMIT;
            PERFORM memfdw._import_drop_view(job_id);
            RAISE EXCEPTION USING ERRCODE = failed_state, MESSAGE = failed_msg,
                DETAIL = failed_detail,
                HINT = coalesce(nullif(failed_hint, '') || ' ', '') || format(
                    'Nothing of the failing batch was loaded; %s rows of job %s were. '
                    'Fix the data and CALL memfdw.import_resume(%s), or start again with on_duplicate => ''skip'' or ''record''.',
                    j.rows_done, job_id, job_id);
        END IF;
        UPDATE memfdw.import_jobs
           SET rows_done = rows_done + n_loaded,
               rows_skipped = rows_skipped + (n_read - n_loaded),
               batches = batches + CASE WHEN n_read > 0 THEN 1 ELSE 0 END,
               last_key = coalesce(next_key, last_key),
               state = CASE WHEN n_read < j.batch_rows THEN 'done' ELSE 'running' END,
               error = NULL,
               updated = clock_timestamp()
         WHERE job = job_id
        RETURNING * INTO j;
        COMMIT;
        IF j.state = 'done' OR clock_timestamp() - last_notice > interval '1 second' THEN
            last_notice := clock_timestamp();
            RAISE NOTICE 'import job %: % rows loaded, % skipped (% rows/s)%', job_id,
                j.rows_done, j.rows_skipped,
                round(j.rows_done / greatest(extract(epoch FROM j.updated - j.started), 0.001)),
                CASE WHEN j.state = 'done' THEN ', done' ELSE '' END;
        END IF;
        EXIT WHEN j.state = 'done';
    END LOOP;
    PERFORM memfdw._import_drop_view(job_id);
END
$$;

-- Starts an import job of the rows of `query` into memory table `target` and runs it
-- (see fdw/src/import.rs).
CREATE PROCEDURE memfdw.import(target regclass, query text,
                               on_duplicate text DEFAULT 'error',
                               order_by text DEFAULT NULL,
                               batch_rows integer DEFAULT 10000,
                               INOUT job bigint DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    keys text := order_by;
    conflicts regclass;
    plan json;
    est bigint;
    conflicts_name text;
    jrow memfdw.import_jobs;
BEGIN
    IF NOT EXISTS (
           SELECT FROM pg_foreign_table ft
             JOIN pg_foreign_server s ON s.oid = ft.ftserver
             JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
            WHERE ft.ftrelid = target AND w.fdwname = 'memfdw') THEN
        RAISE EXCEPTION '"%" is not a memory table', target USING ERRCODE = '42809';
    END IF;
    IF on_duplicate IS NULL OR on_duplicate NOT IN ('error', 'skip', 'record') THEN
        RAISE EXCEPTION 'invalid on_duplicate "%"', on_duplicate USING ERRCODE = '22023',
            HINT = 'Use ''error'' (stop; nothing of the failing batch is loaded), ''skip'' or ''record''.';
    END IF;
    IF batch_rows IS NULL OR batch_rows < 1 THEN
        RAISE EXCEPTION 'batch_rows must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF NOT pg_has_role((SELECT relowner FROM pg_class WHERE oid = target), 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', target USING ERRCODE = '42501';
    END IF;
    -- By default the rows go in the order of the target's primary key (the query's
    -- columns of the same names).
    IF keys IS NULL THEN
        SELECT x.columns INTO keys FROM memfdw.indexes() x
         WHERE x.relid = target AND x.is_primary;
        IF keys IS NULL THEN
            RAISE EXCEPTION 'order_by is needed: % has no primary key', target
                USING ERRCODE = '22023',
                HINT = 'Name columns of the query that order its rows and identify each one, e.g. order_by => ''id''.';
        END IF;
    END IF;
    -- (A query that does not parse fails here, before a job exists.)
    EXECUTE format('EXPLAIN (FORMAT JSON) %s', query) INTO plan;
    est := (plan -> 0 -> 'Plan' ->> 'Plan Rows')::numeric::bigint;
    IF on_duplicate = 'record' THEN
        -- The rows not loaded go to <target>_import_conflicts beside the target.
        SELECT format('%I.%I', n.nspname, left(c.relname, 63 - 17) || '_import_conflicts')
          INTO conflicts_name
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = target;
        conflicts := pg_catalog.to_regclass(conflicts_name);
        IF conflicts IS NULL THEN
            EXECUTE format('CREATE TABLE %s (job bigint NOT NULL, key jsonb NOT NULL, '
                           '"row" jsonb NOT NULL, recorded timestamptz NOT NULL DEFAULT now())',
                           conflicts_name);
            conflicts := conflicts_name::regclass;
        ELSIF NOT pg_catalog.pg_has_role((SELECT relowner FROM pg_catalog.pg_class WHERE oid = conflicts), 'USAGE')
              OR (SELECT count(*) FROM pg_catalog.pg_attribute
                   WHERE attrelid = conflicts AND attnum > 0 AND NOT attisdropped
                     AND (attname, atttypid) IN (('job', 'int8'::regtype), ('key', 'jsonb'::regtype),
                                                 ('row', 'jsonb'::regtype))) <> 3 THEN
            RAISE EXCEPTION 'table % exists and is not an import conflicts table of yours', conflicts
                USING ERRCODE = '42P07',
                      HINT = 'It needs columns job bigint, key jsonb and "row" jsonb, and to be yours.';
        END IF;
    END IF;
    INSERT INTO memfdw.import_jobs (target, query, order_by, on_duplicate, batch_rows, conflicts, estimated_total)
    VALUES (target, query, keys, on_duplicate, batch_rows, conflicts, est)
    RETURNING import_jobs.job INTO job;
    -- A bad order_by, or a batch that cannot be planned, fails here, before the job is
    -- committed.
    SELECT * INTO jrow FROM memfdw.import_jobs ij WHERE ij.job = import.job;
    EXECUTE 'EXPLAIN ' || memfdw._import_batch_sql(jrow) USING NULL::jsonb, 1, import.job;
    COMMIT;
    CALL memfdw.import_resume(job);
END
$$;
