-- pgdbm:no-transaction
-- Built concurrently, so it has to run outside a transaction.
CREATE INDEX CONCURRENTLY IF NOT EXISTS users_created_idx ON {{tables.users}} (created_at);
