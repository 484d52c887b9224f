-- The aggregated view of a window back from the read (`since=1h`, what the page's "Seen in" asks
-- for) is kept like the whole graph's, one row per window: computing it is a GROUP BY over the
-- organisation's edges (seconds at 1M edges). 0 is the whole history. The cloud keeps at most 8
-- windows per organisation (store/summary.rs, KEPT_WINDOWS).
ALTER TABLE graph_summaries ADD COLUMN window_secs bigint NOT NULL DEFAULT 0 CHECK (window_secs >= 0);
ALTER TABLE graph_summaries DROP CONSTRAINT graph_summaries_pkey;
ALTER TABLE graph_summaries ADD PRIMARY KEY (org_id, scope, window_secs);
