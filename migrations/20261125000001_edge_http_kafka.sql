-- HTTP paths (from Istio sidecars) and Kafka topics (from brokers' authorizer logs) on edges.
--
-- Stored flattened, one text entry per (path, method) and per (topic, operation), so that
-- re-ingesting an edge unions them with the same array merge as ports and actions:
--   http:  'GET /api/cart' (method, space, path), or '/healthz' alone for a path seen without a method
--   kafka: E'orders\tproduce', E'orders\tdescribe\tdenied' (the broker refused it), or 'orders'
--          alone for a topic seen without an operation
-- cloud-api decodes them back into paths with their methods and topics with their operations.
-- Paths never contain control characters and topic names are [a-zA-Z0-9._-], which report
-- validation enforces, so the separators are unambiguous.
--
-- A constant default makes these ALTERs instant (no table rewrite). Row-level security is per
-- row and the grants to intentmap_app are per table, so both cover the new columns.

ALTER TABLE edges
    ADD COLUMN http  text[] NOT NULL DEFAULT '{}',
    ADD COLUMN kafka text[] NOT NULL DEFAULT '{}';

COMMENT ON COLUMN edges.target_type IS 'kubernetes | service | internet | aws | kafka (a Kafka broker''s workload: namespace and name as for kubernetes)';
