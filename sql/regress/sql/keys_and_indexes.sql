-- Keys and indexes of memory tables declared with ordinary SQL.
CREATE FOREIGN TABLE acc (id int PRIMARY KEY, owner text, branch int,
    CONSTRAINT owner_branch UNIQUE (owner, branch)) SERVER memfdw;
SELECT table_name, index_name, columns, is_unique, is_primary FROM memfdw.indexes() ORDER BY 2;
\d acc
INSERT INTO acc VALUES (1, 'a', 1), (2, 'a', NULL), (3, 'a', NULL);
-- unique violations name the constraint and the key
INSERT INTO acc VALUES (1, 'b', 1);
INSERT INTO acc VALUES (4, 'a', 1);
UPDATE acc SET id = 1 WHERE id = 2;
INSERT INTO acc VALUES (NULL, 'z', 9);
-- indexes on populated tables; a unique build meeting duplicates leaves nothing
CREATE INDEX ON acc (branch);
CREATE UNIQUE INDEX owner_u ON acc (owner);
-- what memory tables refuse
CREATE INDEX ON acc USING hash (id);
CREATE INDEX ON acc ((id + 1));
CREATE INDEX ON acc (id) WHERE id > 0;
-- INCLUDE adds nothing (a memory index reaches the whole row) but must name columns.
CREATE INDEX acc_incl ON acc (id) INCLUDE (nosuch);
CREATE INDEX acc_incl ON acc (id) INCLUDE (owner);
DROP INDEX acc_incl;
CREATE INDEX acc_pkey ON acc (owner);
CREATE INDEX IF NOT EXISTS acc_pkey ON acc (owner);
CREATE FOREIGN TABLE j (a jsonb PRIMARY KEY) SERVER memfdw;
CREATE FOREIGN TABLE k (a int PRIMARY KEY, b int PRIMARY KEY) SERVER memfdw;
CREATE FOREIGN TABLE d (a int UNIQUE DEFERRABLE) SERVER memfdw;
-- index DDL follows transactions and savepoints
BEGIN;
CREATE INDEX gone ON acc (owner);
ROLLBACK;
BEGIN;
SAVEPOINT a;
CREATE INDEX gone2 ON acc (owner);
ROLLBACK TO a;
CREATE INDEX kept ON acc (owner);
COMMIT;
DROP INDEX acc_branch_idx;
DROP INDEX IF EXISTS nothing_here, kept;
DROP INDEX kept;
SELECT index_name, columns, entries FROM memfdw.indexes() ORDER BY 1;
SELECT * FROM acc ORDER BY id;
DROP FOREIGN TABLE acc;
SELECT count(*) FROM memfdw.indexes();
-- INCLUDE on keys: accepted, checked.
CREATE FOREIGN TABLE inc (a int, b text, PRIMARY KEY (a) INCLUDE (zz)) SERVER memfdw;
CREATE FOREIGN TABLE inc (a int, b text, PRIMARY KEY (a) INCLUDE (b)) SERVER memfdw;
INSERT INTO inc VALUES (1, 'x');
INSERT INTO inc VALUES (1, 'y');
DROP FOREIGN TABLE inc;
-- A table without columns, as PostgreSQL allows (scripts use them for LOCK TABLE).
CREATE FOREIGN TABLE nocols () SERVER memfdw;
INSERT INTO nocols DEFAULT VALUES;
INSERT INTO nocols DEFAULT VALUES;
SELECT count(*) FROM nocols;
DELETE FROM nocols;
SELECT count(*) FROM nocols;
BEGIN;
LOCK TABLE nocols IN ACCESS EXCLUSIVE MODE;
COMMIT;
DROP FOREIGN TABLE nocols;
-- A relation cannot take the name of a memory index (they share the namespace).
CREATE FOREIGN TABLE nm (a int PRIMARY KEY) SERVER memfdw;
CREATE TABLE nm_pkey (x int);
CREATE TABLE IF NOT EXISTS nm_pkey (x int);
CREATE VIEW nm_pkey AS SELECT 1;
CREATE SEQUENCE nm_pkey;
CREATE TABLE nm_pkey AS SELECT 1;
DROP FOREIGN TABLE nm;
CREATE TABLE nm_pkey (x int);
DROP TABLE nm_pkey;
-- ALTER INDEX ... RENAME: the index keeps its kind and keys, under the new name.
CREATE FOREIGN TABLE rn (a int PRIMARY KEY, b int) SERVER memfdw;
CREATE UNIQUE INDEX rn_b ON rn (b);
INSERT INTO rn VALUES (1, 1);
ALTER INDEX rn_b RENAME TO rn_b2;
ALTER INDEX rn_pkey RENAME TO rn_key;
ALTER INDEX rn_key RENAME TO rn_b2;
ALTER INDEX IF EXISTS nosuch RENAME TO x;
BEGIN;
ALTER INDEX rn_b2 RENAME TO rn_b3;
ROLLBACK;
SELECT index_name, columns, is_unique, is_primary, entries FROM memfdw.indexes()
  WHERE table_name = 'rn' ORDER BY 1;
INSERT INTO rn VALUES (1, 2);
INSERT INTO rn VALUES (2, 1);
SELECT array_to_string(ftoptions, ',') FROM pg_foreign_table WHERE ftrelid = 'rn'::regclass;
DROP FOREIGN TABLE rn;
