-- Runs once, when the postgres container initialises an empty data volume: the connector's own state
-- (SYNC_DATABASE_URL: ledger, staged documents, watermarks, DMF executions) gets a database of its own
-- next to Dagster's (POSTGRES_DB). The connector creates its tables on first use.
CREATE DATABASE coupa_d365_sync;
