\echo '-- memory tables and their sizes'
SELECT table_name, rows, pg_size_pretty(data_bytes) AS data FROM memfdw.tables() ORDER BY 1;
\echo '-- a transfer, visible to every session once committed'
BEGIN;
UPDATE accounts SET balance = balance - 10 WHERE id = 1;
UPDATE accounts SET balance = balance + 10 WHERE id = 2;
INSERT INTO history (account_id, delta, note) VALUES (1, -10, 'transfer'), (2, 10, 'transfer');
COMMIT;
SELECT id, owner, balance FROM accounts WHERE id IN (1, 2) ORDER BY id;
\echo '-- aggregates and joins work like on heap tables'
SELECT count(*) AS accounts, sum(balance) AS total FROM accounts;
SELECT a.id, a.owner, sum(h.delta) AS moved
FROM accounts a JOIN history h ON h.account_id = a.id
WHERE a.id <= 3 GROUP BY a.id, a.owner ORDER BY a.id;
\echo '-- keys and indexes, and the plans that use them'
SELECT table_name, index_name, columns, is_unique, is_primary FROM memfdw.indexes() ORDER BY 1, 2;
EXPLAIN (COSTS OFF) SELECT * FROM accounts WHERE id = 42;
EXPLAIN (COSTS OFF) SELECT * FROM accounts ORDER BY id DESC LIMIT 5;
EXPLAIN (COSTS OFF) SELECT a.owner, h.delta FROM accounts a JOIN history h ON h.account_id = a.id WHERE a.id < 4;
\echo '-- engine memory'
SELECT pg_size_pretty(limit_bytes) AS limit, pg_size_pretty(in_use_bytes) AS in_use FROM memfdw.memory();
