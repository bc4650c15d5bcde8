-- Converting a table between heap and memory: memfdw.convert_to_memory and
-- memfdw.convert_to_heap (see fdw/src/convert.rs).

-- What would stop `rel` from being converted, one line each: objects that refer to
-- the table by its identity (views, rules, foreign keys, triggers, inheritance,
-- policies, publications) and would be left on the old table or dropped with it,
-- identity columns, and (to memory) indexes memfdw cannot keep.
CREATE FUNCTION memfdw._conversion_blockers(rel regclass, to_memory boolean)
RETURNS SETOF text LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('view or rule of %s depends on it', r.ev_class::regclass)
      FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
     WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
       AND d.refobjid = rel AND r.ev_class <> rel
     GROUP BY r.ev_class
    UNION ALL
    SELECT format('rule %I is defined on it', r.rulename)
      FROM pg_rewrite r WHERE r.ev_class = rel
    UNION ALL
    SELECT format('foreign key %I of %s', c.conname, c.conrelid::regclass)
      FROM pg_constraint c WHERE c.contype = 'f' AND (c.conrelid = rel OR c.confrelid = rel)
    UNION ALL
    SELECT format('trigger %I', t.tgname)
      FROM pg_trigger t WHERE t.tgrelid = rel AND NOT t.tgisinternal
    UNION ALL
    SELECT format('it inherits from %s', i.inhparent::regclass)
      FROM pg_inherits i WHERE i.inhrelid = rel
    UNION ALL
    SELECT format('%s inherits from it', i.inhrelid::regclass)
      FROM pg_inherits i WHERE i.inhparent = rel
    UNION ALL
    SELECT format('row-level security policy %I', p.polname)
      FROM pg_policy p WHERE p.polrelid = rel
    UNION ALL
    SELECT format('it is in publication %I', p.pubname)
      FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
     WHERE pr.prrelid = rel
    UNION ALL
    SELECT 'row-level security is enabled on it'
      FROM pg_class c WHERE c.oid = rel AND (c.relrowsecurity OR c.relforcerowsecurity)
    UNION ALL
    SELECT 'it is a temporary or unlogged table'
      FROM pg_class c WHERE c.oid = rel AND c.relpersistence <> 'p'
    UNION ALL
    -- Anything else that refers to the table or its row type (functions with SQL
    -- bodies, columns of its type, statistics objects, ...).
    SELECT format('%s depends on it', pg_describe_object(d.classid, d.objid, d.objsubid))
      FROM pg_depend d
     WHERE ((d.refclassid = 'pg_class'::regclass AND d.refobjid = rel)
            OR (d.refclassid = 'pg_type'::regclass
                AND d.refobjid = (SELECT reltype FROM pg_class WHERE oid = rel)))
       AND d.deptype IN ('n', 'a')
       AND d.classid NOT IN ('pg_rewrite'::regclass, 'pg_constraint'::regclass,
                             'pg_trigger'::regclass, 'pg_policy'::regclass,
                             'pg_publication_rel'::regclass, 'pg_attrdef'::regclass)
       -- (its own indexes and the sequences its columns own follow it)
       AND NOT (d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass)
    UNION ALL
    SELECT format('column %I is an identity column', a.attname)
      FROM pg_attribute a
     WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity <> ''
    UNION ALL
    -- Indexes memfdw keeps: btree over plain columns, ascending, no INCLUDE, no
    -- predicate, not deferrable, not an exclusion constraint.
    SELECT format('index %s is not a plain ascending btree index over columns with their default collation and operator class',
                  i.indexrelid::regclass)
      FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
      JOIN pg_am am ON am.oid = ic.relam
     WHERE to_memory AND i.indrelid = rel
       AND (am.amname <> 'btree' OR i.indexprs IS NOT NULL OR i.indpred IS NOT NULL
            OR i.indnkeyatts <> i.indnatts OR 0 = ANY (i.indkey::int2[])
            OR EXISTS (SELECT FROM unnest(i.indoption::int2[]) o WHERE o <> 0)
            OR i.indnullsnotdistinct
            -- Not the column's collation, or not the type's default operator class.
            OR EXISTS (SELECT FROM unnest(i.indkey::int2[], i.indcollation::oid[], i.indclass::oid[])
                                   k(attnum, coll, opc)
                         JOIN pg_attribute a ON a.attrelid = rel AND a.attnum = k.attnum
                         JOIN pg_opclass oc ON oc.oid = k.opc
                        WHERE k.coll <> a.attcollation OR NOT oc.opcdefault)
            OR EXISTS (SELECT FROM pg_constraint c
                        WHERE c.conindid = i.indexrelid AND c.conrelid = rel
                          AND (c.condeferrable OR c.contype = 'x')))
    ORDER BY 1
$$;

-- The conversion itself, in the caller's transaction.
CREATE FUNCTION memfdw._convert(rel regclass, to_memory boolean, keep_as name)
RETURNS regclass LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    nsp name;
    nspoid oid;
    tabname name;
    owner oid;
    is_memory boolean;
    blockers text[];
    coldefs text;
    collist text;
    old regclass;
    new regclass;
    tmpname name;
    kind text := CASE WHEN to_memory THEN 'FOREIGN TABLE' ELSE 'TABLE' END;
    oldkind text := CASE WHEN to_memory THEN 'TABLE' ELSE 'FOREIGN TABLE' END;
    started timestamptz := clock_timestamp();
    nrows bigint;
BEGIN
    -- Lock first (the owner's right to, checked before), then read what the lock
    -- keeps still: nobody reads or writes the table while it is copied; others wait
    -- and then see the new table.
    IF NOT pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = rel), 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', rel USING ERRCODE = '42501';
    END IF;
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', rel);
    SELECT n.nspname, n.oid, c.relname, c.relowner,
           c.relkind = 'f' AND EXISTS (
               SELECT FROM pg_foreign_table ft
                 JOIN pg_foreign_server s ON s.oid = ft.ftserver
                 JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
                WHERE ft.ftrelid = c.oid AND w.fdwname = 'memfdw')
      INTO nsp, nspoid, tabname, owner, is_memory
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = rel;
    IF nsp IN ('pg_catalog', 'information_schema') OR nsp LIKE 'pg\_toast%' THEN
        RAISE EXCEPTION '"%" is a system catalog', tabname USING ERRCODE = '42809';
    END IF;
    IF to_memory AND is_memory THEN
        RAISE EXCEPTION '"%" is already a memory table', tabname USING ERRCODE = '42809';
    END IF;
    IF to_memory AND NOT EXISTS (SELECT FROM pg_class WHERE oid = rel AND relkind = 'r') THEN
        RAISE EXCEPTION '"%" is not a table', tabname USING ERRCODE = '42809',
            HINT = 'Only ordinary heap tables (not partitioned tables, views or foreign tables) can be converted to memory tables.';
    END IF;
    IF NOT to_memory AND NOT is_memory THEN
        RAISE EXCEPTION '"%" is not a memory table', tabname USING ERRCODE = '42809';
    END IF;
    IF NOT pg_has_role(owner, 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', tabname USING ERRCODE = '42501';
    END IF;
    IF keep_as IS NOT NULL AND EXISTS (
           SELECT FROM pg_class c WHERE c.relnamespace = nspoid AND c.relname = keep_as) THEN
        RAISE EXCEPTION 'relation "%" already exists', keep_as USING ERRCODE = '42P07',
            HINT = 'keep_as names the old table after the conversion.';
    END IF;
    SELECT array_agg(b) INTO blockers FROM memfdw._conversion_blockers(rel, to_memory) b;
    IF blockers IS NOT NULL THEN
        RAISE EXCEPTION '% cannot be converted: %', rel, array_to_string(blockers, '; ')
            USING ERRCODE = '2BP01',
                  HINT = 'Drop or move these first; they refer to the table itself, which the conversion replaces.';
    END IF;

    -- Columns (with NOT NULL, defaults, generated expressions, collations).
    SELECT string_agg(
               format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod))
               || CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0
                       THEN format(' COLLATE %I.%I', cn.nspname, co.collname) ELSE '' END
               || CASE WHEN a.attgenerated = 's'
                       THEN format(' GENERATED ALWAYS AS (%s) STORED',
                                   pg_get_expr(d.adbin, d.adrelid))
                       WHEN d.adbin IS NOT NULL
                       THEN ' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid) ELSE '' END
               || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END,
               ', ' ORDER BY a.attnum),
           string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
               FILTER (WHERE a.attgenerated = '')
      INTO coldefs, collist
      FROM pg_attribute a
      JOIN pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_collation co ON co.oid = a.attcollation
      LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped;

    -- The old table steps aside under a temporary name; the new one takes its name.
    tmpname := format('memfdw_converting_%s', rel::oid);
    EXECUTE format('ALTER %s %s RENAME TO %I', oldkind, rel, tmpname);
    old := rel;
    EXECUTE format('CREATE %s %I.%I (%s)%s', kind, nsp, tabname, coalesce(coldefs, ''),
                   CASE WHEN to_memory THEN ' SERVER memfdw' ELSE '' END);
    new := format('%I.%I', nsp, tabname)::regclass;

    -- The rows, before the keys and indexes: both memfdw (sorting the keys with
    -- several threads) and a heap btree build an index over loaded rows faster than
    -- they maintain it row by row.
    IF collist IS NOT NULL THEN
        EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM %s', new, collist, collist, old);
        GET DIAGNOSTICS nrows = ROW_COUNT;
    ELSE
        nrows := 0;
    END IF;

    -- Keys and indexes, primary key first, under their own names: a heap table's from
    -- pg_index, a memory table's from memfdw.indexes(). `kind` is p (primary key), u
    -- (UNIQUE constraint), unique (unique index) or index.
    FOR r IN
        SELECT * FROM (
        SELECT ic.relname AS iname,
               CASE WHEN c.contype IN ('p', 'u') THEN c.contype::text
                    WHEN i.indisunique THEN 'unique' ELSE 'index' END AS kind,
               ic.oid::int8 AS ord,
               (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord)
                  FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                  JOIN pg_attribute a ON a.attrelid = old AND a.attnum = k.attnum) AS cols
          FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
          LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = old
                                   AND c.contype IN ('p', 'u')
         WHERE to_memory AND i.indrelid = old
        UNION ALL
        SELECT x.index_name,
               CASE WHEN x.is_primary THEN 'p' WHEN x.is_unique THEN 'unique' ELSE 'index' END,
               0,
               (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord)
                  FROM unnest(x.column_numbers) WITH ORDINALITY k(attnum, ord)
                  JOIN pg_attribute a ON a.attrelid = old AND a.attnum = k.attnum)
          FROM memfdw.indexes() x
         WHERE NOT to_memory AND x.relid = old) ix
        ORDER BY ix.kind = 'p' DESC, ix.ord, ix.iname
    LOOP
        -- The old table's index holds the name: it steps aside too.
        EXECUTE format('ALTER INDEX %I.%I RENAME TO %I', nsp, r.iname,
                       left(coalesce(keep_as, tmpname) || '_' || r.iname, 63));
        EXECUTE CASE r.kind
            WHEN 'p' THEN format('ALTER %s %s ADD CONSTRAINT %I PRIMARY KEY (%s)',
                                 kind, new, r.iname, r.cols)
            WHEN 'u' THEN format('ALTER %s %s ADD CONSTRAINT %I UNIQUE (%s)',
                                 kind, new, r.iname, r.cols)
            WHEN 'unique' THEN format('CREATE UNIQUE INDEX %I ON %s (%s)', r.iname, new, r.cols)
            ELSE format('CREATE INDEX %I ON %s (%s)', r.iname, new, r.cols)
        END;
    END LOOP;

    -- CHECK constraints, after the rows (as written: a NOT VALID one stays so, and
    -- old rows it never checked are not checked now).
    FOR r IN
        SELECT c.conname, pg_get_constraintdef(c.oid) AS def
          FROM pg_constraint c WHERE c.conrelid = old AND c.contype = 'c'
         ORDER BY c.conname
    LOOP
        EXECUTE format('ALTER %s %s ADD CONSTRAINT %I %s', kind, new, r.conname, r.def);
    END LOOP;

    -- The owner, as it was (before owned sequences move: they must share it).
    IF (SELECT relowner FROM pg_class WHERE oid = new) <> owner THEN
        EXECUTE format('ALTER %s %s OWNER TO %s', kind, new, owner::regrole);
    END IF;

    -- Sequences owned by the old table's columns now belong to the new one's.
    FOR r IN
        SELECT d.objid::regclass AS seq, a.attname
          FROM pg_depend d
          JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
          JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
           AND d.refobjid = old AND d.deptype = 'a'
    LOOP
        EXECUTE format('ALTER SEQUENCE %s OWNED BY %s.%I', r.seq, new, r.attname);
    END LOOP;

    -- Comments on the table, its columns and its CHECK constraints.
    FOR r IN
        SELECT a.attname, col_description(old, a.attnum) AS txt
          FROM pg_attribute a
         WHERE a.attrelid = old AND a.attnum > 0 AND NOT a.attisdropped
           AND col_description(old, a.attnum) IS NOT NULL
    LOOP
        EXECUTE format('COMMENT ON COLUMN %s.%I IS %L', new, r.attname, r.txt);
    END LOOP;
    IF obj_description(old, 'pg_class') IS NOT NULL THEN
        EXECUTE format('COMMENT ON %s %s IS %L', kind, new, obj_description(old, 'pg_class'));
    END IF;
    FOR r IN
        SELECT c.conname, obj_description(c.oid, 'pg_constraint') AS txt
          FROM pg_constraint c
         WHERE c.conrelid = old AND c.contype = 'c'
           AND obj_description(c.oid, 'pg_constraint') IS NOT NULL
    LOOP
        EXECUTE format('COMMENT ON CONSTRAINT %I ON %s IS %L', r.conname, new, r.txt);
    END LOOP;

    -- Privileges (table and column grants), as they were.
    -- Exactly the old ACL: what the new table got by default (the owner's, default
    -- privileges) goes, the old grants come back (re-granted by the owner).
    FOR r IN
        SELECT DISTINCT (aclexplode(relacl)).grantee FROM pg_class WHERE oid = new
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM %s CASCADE', new,
                       CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE r.grantee::regrole::text END);
    END LOOP;
    FOR r IN
        SELECT (aclexplode(coalesce(relacl, acldefault('r', relowner)))).*
          FROM pg_class WHERE oid = old
    LOOP
        EXECUTE format('GRANT %s ON %s TO %s%s', r.privilege_type, new,
                       CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE r.grantee::regrole::text END,
                       CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    FOR r IN
        SELECT a.attname, (aclexplode(a.attacl)).*
          FROM pg_attribute a
         WHERE a.attrelid = old AND a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL
    LOOP
        EXECUTE format('GRANT %s (%I) ON %s TO %s%s', r.privilege_type, r.attname, new,
                       CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE r.grantee::regrole::text END,
                       CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;

    -- The old table: dropped, or kept under the name asked for.
    IF keep_as IS NULL THEN
        EXECUTE format('DROP %s %s', oldkind, old);
    ELSE
        EXECUTE format('ALTER %s %s RENAME TO %I', oldkind, old, keep_as);
    END IF;
    RAISE NOTICE '% converted to a % table: % rows in % ms', new,
        CASE WHEN to_memory THEN 'memory' ELSE 'heap' END, nrows,
        round(extract(epoch FROM clock_timestamp() - started) * 1000);
    RETURN new;
END
$$;

CREATE FUNCTION memfdw.convert_to_memory(rel regclass, keep_as name DEFAULT NULL)
RETURNS regclass LANGUAGE sql SET search_path = pg_catalog, pg_temp
RETURN memfdw._convert(rel, true, keep_as);
COMMENT ON FUNCTION memfdw.convert_to_memory(regclass, name) IS
  'turns heap table rel into a memory table of the same name (rows, keys, indexes, constraints, owner, grants, comments); the heap table is dropped, or kept renamed to keep_as';

CREATE FUNCTION memfdw.convert_to_heap(rel regclass, keep_as name DEFAULT NULL)
RETURNS regclass LANGUAGE sql SET search_path = pg_catalog, pg_temp
RETURN memfdw._convert(rel, false, keep_as);
COMMENT ON FUNCTION memfdw.convert_to_heap(regclass, name) IS
  'turns memory table rel into a heap table of the same name; the memory table is dropped, or kept renamed to keep_as';
