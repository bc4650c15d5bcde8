//! In-server tests (`cargo pgrx test`): datum packing for every supported type,
//! refusals, and transactional DDL. End-to-end tests with many sessions live in
//! `tests/`.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    const EVERY_TYPE: &str = "b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric, \
        c char(5), vc varchar(10), t text, by bytea, d date, tm time, ttz timetz, ts timestamp, \
        tstz timestamptz, iv interval, u uuid, j json, jb jsonb";

    const VALUES: &str = "(true, -32768, 2147483647, -9223372036854775808, 1.5, -2.25e300, \
          123456789012345678901234567890.123456789, 'ab', 'hello', repeat('x', 3000), '\\x00ff10', \
          '2024-02-29', '23:59:59.999999', '12:00:00+05:30', '1999-12-31 23:59:59', \
          '2000-01-01 00:00:00+00', '1 year 2 months 3 days 04:05:06', \
          'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}', '{\"b\": {\"c\": null}}'), \
        (false, 0, 0, 0, 'NaN', '-Infinity', 'NaN', '', '', '', '', 'infinity', '00:00', '00:00+00', \
          '-infinity', 'infinity', '-178000000 years', '00000000-0000-0000-0000-000000000000', '[]', '[]'), \
        (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
          NULL, NULL, NULL, NULL, NULL)";

    #[pg_test]
    fn every_type_round_trips_like_a_heap_table() {
        Spi::run(&format!(
            "CREATE FOREIGN TABLE m ({EVERY_TYPE}) SERVER memfdw"
        ))
        .unwrap();
        Spi::run(&format!("CREATE TABLE h ({EVERY_TYPE})")).unwrap();
        Spi::run(&format!("INSERT INTO m VALUES {VALUES}")).unwrap();
        Spi::run(&format!("INSERT INTO h VALUES {VALUES}")).unwrap();
        let same = Spi::get_one::<bool>(
            "SELECT (SELECT array_agg(m::text ORDER BY m::text) FROM m) \
                  = (SELECT array_agg(h::text ORDER BY h::text) FROM h)",
        )
        .unwrap();
        assert_eq!(same, Some(true));
        // Values survive UPDATE of another column and are comparable as values, not text.
        Spi::run("UPDATE m SET i4 = i4 - 1 WHERE i4 IS NOT NULL").unwrap();
        let n = Spi::get_one::<i64>(
            "SELECT count(*) FROM m JOIN h USING (n, ts, iv, u, by) WHERE m.i4 = h.i4 - 1",
        )
        .unwrap();
        assert_eq!(n, Some(2));
        let jb = Spi::get_one::<bool>("SELECT jb @> '{\"b\": {}}' FROM m WHERE b").unwrap();
        assert_eq!(jb, Some(true));
    }

    #[pg_test]
    fn array_column_round_trips() {
        Spi::run("CREATE FOREIGN TABLE arr (id int, a int[]) SERVER memfdw").unwrap();
        Spi::run("INSERT INTO arr VALUES (1, '{1,2,NULL}')").unwrap();
        let n = Spi::get_one::<i32>("SELECT a[2] FROM arr").unwrap();
        assert_eq!(n, Some(2));
    }

    #[pg_test]
    fn not_null_is_enforced() {
        Spi::run("CREATE FOREIGN TABLE nn (id int NOT NULL, v text) SERVER memfdw").unwrap();
        let r = std::panic::catch_unwind(|| Spi::run("INSERT INTO nn VALUES (NULL, 'x')"));
        assert!(r.is_err() || r.unwrap().is_err());
    }

    #[pg_test]
    fn savepoint_rollback_undoes_writes_and_ddl() {
        Spi::run("CREATE FOREIGN TABLE sp (id int NOT NULL) SERVER memfdw").unwrap();
        Spi::run("INSERT INTO sp SELECT generate_series(1, 10)").unwrap();
        // Internal subtransactions: a failing block rolls back to its start. The
        // error carries the OID sp2 had out of the rolled-back block (other tests run
        // concurrently in this cluster, so counting all engine tables would race).
        Spi::run(
            "DO $$ DECLARE msg text; BEGIN
                 BEGIN
                     DELETE FROM sp WHERE id <= 5;
                     UPDATE sp SET id = id * 100;
                     CREATE FOREIGN TABLE sp2 (x int) SERVER memfdw;
                     RAISE EXCEPTION '%', 'sp2'::regclass::oid;
                 EXCEPTION WHEN raise_exception THEN
                     GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
                     PERFORM set_config('memfdw_test.sp2', msg, true);
                 END;
             END $$",
        )
        .unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT sum(id) FROM sp").unwrap(),
            Some(55)
        );
        assert_eq!(
            Spi::get_one::<i64>(
                "SELECT count(*) FROM memfdw.tables() \
                 WHERE relid = current_setting('memfdw_test.sp2')::oid"
            )
            .unwrap(),
            Some(0),
            "the engine table of the rolled-back CREATE is gone"
        );
        assert_eq!(
            Spi::get_one::<i64>(
                "SELECT count(*) FROM memfdw.tables() WHERE relid = 'sp'::regclass"
            )
            .unwrap(),
            Some(1)
        );
    }

    #[pg_test]
    fn delete_returning_and_read_own_writes() {
        Spi::run("CREATE FOREIGN TABLE r (id int, v text) SERVER memfdw").unwrap();
        Spi::run("INSERT INTO r VALUES (1, 'a'), (2, 'b'), (3, 'c')").unwrap();
        Spi::run("UPDATE r SET v = v || v WHERE id = 2").unwrap();
        assert_eq!(
            Spi::get_one::<String>("SELECT v FROM r WHERE id = 2").unwrap(),
            Some("bb".into())
        );
        assert_eq!(
            Spi::get_one::<String>("DELETE FROM r WHERE id = 2 RETURNING v").unwrap(),
            Some("bb".into())
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM r").unwrap(),
            Some(2)
        );
        // INSERT ... SELECT from the same table sees only rows from before the statement.
        Spi::run("INSERT INTO r SELECT id + 10, v FROM r").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM r").unwrap(),
            Some(4)
        );
    }

    #[pg_test]
    fn alter_rewrites_the_rows() {
        Spi::run("CREATE FOREIGN TABLE al (id int) SERVER memfdw").unwrap();
        Spi::run("INSERT INTO al VALUES (1), (2)").unwrap();
        Spi::run("ALTER FOREIGN TABLE al ADD COLUMN x int DEFAULT 7").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT sum(x) FROM al").unwrap(),
            Some(14)
        );
    }
}
