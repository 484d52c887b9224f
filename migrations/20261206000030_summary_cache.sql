-- The aggregated view kept between reads (issue 19, item 6): computing it is a GROUP BY over every
-- edge of the organisation (seconds at 1M edges), so its rows are stored once computed and served
-- until the edges change, and, while a refresh runs, for a bounded time after (`stale`).
--
-- What "the edges changed" means is exact, not a clock: every write of edges bumps a version in
-- the same transaction (a report: its cluster's row, which ingest updates anyway; pruning: the
-- organisation's row), and a stored summary keeps the versions it was computed from, read in the
-- same snapshot as its rows. A summary is fresh while they are still the current ones.
ALTER TABLE clusters ADD COLUMN edges_version bigint NOT NULL DEFAULT 0;
ALTER TABLE organizations ADD COLUMN edges_version bigint NOT NULL DEFAULT 0;

CREATE TABLE graph_summaries (
    org_id    uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- '' for the whole organisation, else the cluster name of a cluster= summary
    scope     text NOT NULL CHECK (length(scope) <= 253),
    -- the organisation's and each cluster's edges_version when it was computed
    versions  text NOT NULL,
    -- when its snapshot was taken
    as_of     timestamptz NOT NULL,
    -- the summary's rows (JSON), at most --graph-max-edges of them
    body      bytea NOT NULL,
    PRIMARY KEY (org_id, scope)
);

ALTER TABLE graph_summaries ENABLE ROW LEVEL SECURITY;
ALTER TABLE graph_summaries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON graph_summaries USING (org_id = current_org()) WITH CHECK (org_id = current_org());
GRANT SELECT, INSERT, UPDATE, DELETE ON graph_summaries TO intentmap_app;
