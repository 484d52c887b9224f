-- Indexes for paged and filtered graph reads at a million edges (issue 19, item 6).

-- Pages of the graph are read in byte order of the client (namespace, name), through
-- edges_by_client. With the cluster as its last key column, a `cluster=` page checks each entry
-- in the index instead of fetching its row first: a page of 5,000 of one cluster's edges (a
-- tenth of the organisation) read 86,000 rows to keep 5,000 (73 ms) and now reads the 5,000
-- (10 ms); the last page no longer reads every remaining row to find there is none.
-- cluster_id never changes: re-reports stay HOT updates.
CREATE INDEX edges_by_client_cluster
    ON edges (org_id, client_namespace COLLATE "C", client_name COLLATE "C", cluster_id);
DROP INDEX edges_by_client;
ALTER INDEX edges_by_client_cluster RENAME TO edges_by_client;

-- The internet edges that reach a matching exposure (found through edges_internet_keys by
-- internet_edges_reaching) are read back by the graph's filters as
-- `target_type = 'internet' AND cluster_id = ANY(...) AND edge_key = ANY(...)`. Through the
-- primary key (org_id, cluster_id, edge_key) that is every (cluster, key) pair: 45,000 probes
-- for 5,000 edges in 9 clusters, which PostgreSQL costs above a scan of the whole organisation
-- and so, past a size, scanned it (2.5 s at 1M edges). Keyed by edge alone, internet edges
-- only, it is one probe per edge; the cluster is checked on the row. Re-reports never change
-- edge_key: they stay HOT updates.
CREATE INDEX edges_internet_by_key ON edges (org_id, edge_key) WHERE target_type = 'internet';
