-- Reads that scale (issue 19, item 6): the access graph's namespace and workload filters and the
-- ClientIntents export are answered in SQL, from these two indexes, instead of loading the whole
-- organisation. Both lead with org_id (row-level security and the Citus plan key on it).
--
-- The client side in byte order ("C"): the export streams clients in the order the unstreamed
-- export sorts them (Rust's string order), straight from this index. Queries compare the client
-- namespace under COLLATE "C" so that this index serves them.
CREATE INDEX edges_by_client ON edges (org_id, client_namespace COLLATE "C", client_name COLLATE "C");
-- The target side; internet, AWS and incoming targets have target_namespace '', so the edges
-- that may resolve to another cluster's exposed workload are found under (org_id, '').
CREATE INDEX edges_by_target ON edges (org_id, target_namespace, target_name);
-- No index on last_seen: every re-report moves it, and an index on it would stop those updates
-- from being HOT. A since= window alone scans the organisation's edges in the database (it no
-- longer ships them to cloud-api).
