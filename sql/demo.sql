-- memfdw demo: memory tables beside a heap table.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS memfdw;
DROP FOREIGN TABLE IF EXISTS accounts, history;

CREATE FOREIGN TABLE accounts (
    id      int PRIMARY KEY,
    owner   text UNIQUE,
    balance bigint NOT NULL,
    opened  date
) SERVER memfdw;

CREATE FOREIGN TABLE history (
    account_id int NOT NULL,
    delta      bigint NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    note       text
) SERVER memfdw;

INSERT INTO accounts
SELECT g, 'owner ' || g, 1000 + g % 500, date '2020-01-01' + g % 1500
FROM generate_series(1, 100000) g;

INSERT INTO history (account_id, delta, note)
SELECT 1 + g % 100000, (g % 200) - 100, 'initial'
FROM generate_series(1, 20000) g;

CREATE INDEX history_account ON history (account_id);
ANALYZE accounts;
ANALYZE history;
