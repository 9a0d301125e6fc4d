-- The table the quickstart creates for itself, as a migration, so that `pgdbm check` can
-- describe the quickstart's statements (see pgdbm.toml here).
CREATE TABLE {{tables.users}} (id serial PRIMARY KEY, email text UNIQUE NOT NULL, name text);
