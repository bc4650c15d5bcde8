-- Which access EXPLAIN shows for each kind of query.
CREATE FOREIGN TABLE m (id int PRIMARY KEY, grp int, val numeric, code text) SERVER memfdw;
CREATE INDEX m_grp_val ON m (grp, val);
INSERT INTO m SELECT g, g % 50, g % 997, 'c' || g FROM generate_series(1, 100000) g;
ANALYZE m;
CREATE TABLE probe AS SELECT g * 4999 AS k FROM generate_series(1, 20) g;
ANALYZE probe;
EXPLAIN (COSTS OFF) SELECT * FROM m WHERE id = 42;
-- A comparison value of another integer type (as drivers bind it).
EXPLAIN (COSTS OFF) SELECT * FROM m WHERE id = 42::bigint;
SELECT id FROM m WHERE id = 42::bigint;
SELECT count(*) FROM m WHERE id < 3000000000;
EXPLAIN (COSTS OFF) SELECT id FROM m WHERE grp = 7::smallint ORDER BY val LIMIT 3;
-- Index conditions of a scan inside a subplan name its own columns.
EXPLAIN (COSTS OFF) SELECT * FROM probe WHERE k = (SELECT grp FROM m WHERE id = 5);
EXPLAIN (COSTS OFF) SELECT * FROM m WHERE id BETWEEN 10 AND 20;
EXPLAIN (COSTS OFF) SELECT * FROM m WHERE id IN (1, 2, 3);
EXPLAIN (COSTS OFF) SELECT * FROM m ORDER BY id DESC LIMIT 3;
EXPLAIN (COSTS OFF) SELECT * FROM m WHERE grp = 7 ORDER BY val LIMIT 5;
EXPLAIN (COSTS OFF) SELECT * FROM m WHERE grp IS NULL;
EXPLAIN (COSTS OFF) SELECT * FROM probe p JOIN m ON m.id = p.k;
EXPLAIN (COSTS OFF) SELECT count(*) FROM m WHERE code = 'c5';
EXPLAIN (COSTS OFF) UPDATE m SET val = 0 WHERE id = 5;
EXPLAIN (COSTS OFF) SELECT * FROM m WHERE id = 5 FOR UPDATE;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM m WHERE id BETWEEN 10 AND 14;
SELECT * FROM m WHERE id BETWEEN 10 AND 14 ORDER BY id;
SELECT * FROM m WHERE grp = 7 ORDER BY val DESC, id LIMIT 3;
SELECT count(*) FROM probe p JOIN m ON m.id = p.k;
DROP TABLE probe;
DROP FOREIGN TABLE m;
