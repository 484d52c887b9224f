-- The namespace, workload and cluster filters of the access graph also keep internet edges that
-- reach a matching exposure (another cluster's exposed address or hostname). Without an index
-- those were found by scanning every internet, AWS and incoming edge of the organisation and
-- unnesting its addresses: most of the pages of a large organisation for every such read
-- (issue 19, item 6). This indexes each internet edge's addresses and domains, trailing dots
-- trimmed as the graph compares them, each prefixed with the organisation so that one tenant's
-- lookups never walk another's entries.
CREATE FUNCTION internet_keys(org uuid, domains text[], ips text[]) RETURNS text[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT ARRAY(SELECT org::text || ' ' || rtrim(k, '.') FROM unnest(domains || ips) AS k) $$;

-- Re-reports seldom change an edge's addresses, so they stay HOT updates.
CREATE INDEX edges_internet_keys ON edges USING gin (internet_keys(org_id, domains, ips))
    WHERE target_type = 'internet';

-- Under row-level security PostgreSQL evaluates a condition that is not LEAKPROOF (the array
-- overlap `&&` is not) only after the policy's, so the serving role cannot use this index. The
-- look-up runs as intentmap_auth instead (as the credential look-ups do), in a function that
-- answers for the caller's own organisation only and returns the edges' keys, which the serving
-- role then reads under its policy through the primary key.
DO $$
BEGIN
    EXECUTE format('GRANT intentmap_auth TO %I', current_user);
EXCEPTION WHEN others THEN
    RAISE NOTICE 'could not grant intentmap_auth to %: %', current_user, SQLERRM;
END
$$;

GRANT SELECT (org_id, cluster_id, edge_key, target_type, domains, ips) ON edges TO intentmap_auth;
CREATE POLICY auth_lookup ON edges FOR SELECT TO intentmap_auth USING (true);

CREATE FUNCTION internet_edges_reaching(org uuid, keys text[])
    RETURNS TABLE (cluster_id uuid, edge_key bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
        SELECT e.cluster_id, e.edge_key FROM edges e
        WHERE org = current_org() AND e.org_id = org AND e.target_type = 'internet'
          AND internet_keys(e.org_id, e.domains, e.ips) && internet_keys(org, keys, '{}')
    $$;

DO $$
BEGIN
    EXECUTE format('GRANT CREATE ON SCHEMA %I TO intentmap_auth', current_schema());
END
$$;
ALTER FUNCTION internet_edges_reaching(uuid, text[]) OWNER TO intentmap_auth;
DO $$
BEGIN
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM intentmap_auth', current_schema());
END
$$;
DO $$
BEGIN
    EXECUTE format('REVOKE intentmap_auth FROM %I', current_user);
EXCEPTION WHEN others THEN
    RAISE NOTICE 'could not revoke intentmap_auth from %: %', current_user, SQLERRM;
END
$$;
REVOKE ALL ON FUNCTION internet_edges_reaching(uuid, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION internet_edges_reaching(uuid, text[]) TO intentmap_app;
