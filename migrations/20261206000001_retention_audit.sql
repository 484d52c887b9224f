-- Retention and audit (issue 19, item 8).
--
-- 1. Each organisation keeps edges for edge_retention_days after they were last seen (default
--    90, 1-3650, set by an org admin over the API). cloud-api prunes older edges, and report ids
--    older than its replay window, in the background in small batches.
-- 2. The pruner works across organisations, but the serving role sees no organisation until it
--    names one: retention_orgs() lists the organisations' ids (and nothing else), as
--    intentmap_auth, whose only right on organizations is that SELECT (policy auth_lookup).
-- 3. audit_log: who (an API token id, or the admin CLI) created, revoked or deleted clusters and
--    tokens or changed retention, when, and what. Written in the transaction of the change;
--    the serving role may insert and read it (under row-level security), never change it.

-- === 1. ===

ALTER TABLE organizations
    ADD COLUMN edge_retention_days integer NOT NULL DEFAULT 90
        CHECK (edge_retention_days BETWEEN 1 AND 3650);

-- === 2. ===

DO $$
BEGIN
    EXECUTE format('GRANT intentmap_auth TO %I', current_user);
EXCEPTION WHEN others THEN
    RAISE NOTICE 'could not grant intentmap_auth to %: %', current_user, SQLERRM;
END
$$;

GRANT SELECT (id) ON organizations TO intentmap_auth;
CREATE POLICY auth_lookup ON organizations FOR SELECT TO intentmap_auth USING (true);

CREATE FUNCTION retention_orgs()
    RETURNS TABLE (org_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT o.id FROM organizations o ORDER BY o.id $$;

DO $$
BEGIN
    EXECUTE format('GRANT CREATE ON SCHEMA %I TO intentmap_auth', current_schema());
END
$$;
ALTER FUNCTION retention_orgs() OWNER TO intentmap_auth;
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
REVOKE ALL ON FUNCTION retention_orgs() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION retention_orgs() TO intentmap_app;

-- === 3. ===

CREATE TABLE audit_log (
    org_id          uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    at              timestamptz NOT NULL DEFAULT now(),
    -- api_token (actor_token_id says which) | admin_cli
    actor           text NOT NULL CHECK (actor IN ('api_token', 'admin_cli')),
    actor_token_id  uuid CHECK ((actor = 'api_token') = (actor_token_id IS NOT NULL)),
    -- cluster.create | cluster.revoke | cluster.delete | token.create | token.revoke | retention.update
    action          text NOT NULL CHECK (length(action) BETWEEN 1 AND 64),
    -- the cluster's or token's id, or the organisation's for retention
    target_id       uuid NOT NULL,
    -- a cluster's or token's name, scopes, the retention before and after
    details         jsonb NOT NULL DEFAULT '{}' CHECK (pg_column_size(details) <= 4096),
    PRIMARY KEY (org_id, id)
);

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON audit_log USING (org_id = current_org()) WITH CHECK (org_id = current_org());
GRANT SELECT, INSERT ON audit_log TO intentmap_app;
