-- Tenancy, credentials, reports and edges.
--
-- Every tenant table is keyed by org_id first (ready to be distributed by org_id) and guarded by
-- row-level security as a second wall behind the queries' own org_id filters. The API's
-- connections SET ROLE intentmap_app, which is neither a superuser nor a table owner, so the
-- policies always apply to it. The current organisation travels in the transaction-local
-- setting app.org_id; with none set, no tenant row is visible.

DO $$
BEGIN
    CREATE ROLE intentmap_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT intentmap_app TO %I', current_user);
EXCEPTION WHEN others THEN
    RAISE NOTICE 'could not grant intentmap_app to %: %', current_user, SQLERRM;
END
$$;

CREATE FUNCTION current_org() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT NULLIF(current_setting('app.org_id', true), '')::uuid $$;

CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id          uuid NOT NULL,
    name        text NOT NULL,
    secret_hash text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    PRIMARY KEY (org_id, id),
    UNIQUE (id)
);

CREATE TABLE clusters (
    org_id          uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id              uuid NOT NULL,
    name            text NOT NULL,
    client_id       text NOT NULL UNIQUE,
    secret_hash     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    last_report_at  timestamptz,
    -- generated_at of the report whose exposed set is stored: an older report never overwrites it.
    exposed_as_of   timestamptz,
    PRIMARY KEY (org_id, id),
    UNIQUE (org_id, name),
    UNIQUE (id)
);

CREATE TABLE reports (
    org_id        uuid NOT NULL,
    cluster_id    uuid NOT NULL,
    report_id     uuid NOT NULL,
    generated_at  timestamptz NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    edge_count    integer NOT NULL,
    PRIMARY KEY (org_id, cluster_id, report_id),
    FOREIGN KEY (org_id, cluster_id) REFERENCES clusters (org_id, id) ON DELETE CASCADE
);

CREATE TABLE edges (
    org_id            uuid NOT NULL,
    cluster_id        uuid NOT NULL,
    client_namespace  text NOT NULL,
    client_name       text NOT NULL,
    -- kubernetes | service | internet | aws
    target_type       text NOT NULL,
    -- '' for targets outside Kubernetes
    target_namespace  text NOT NULL,
    -- workload or service name, internet identity (first domain, else first IP), or AWS ARN
    target_name       text NOT NULL,
    client_kind       text,
    target_kind       text,
    ports             text[] NOT NULL DEFAULT '{}',
    domains           text[] NOT NULL DEFAULT '{}',
    ips               text[] NOT NULL DEFAULT '{}',
    internet_ports    integer[] NOT NULL DEFAULT '{}',
    actions           text[] NOT NULL DEFAULT '{}',
    first_seen        timestamptz NOT NULL,
    last_seen         timestamptz NOT NULL,
    connections       bigint NOT NULL DEFAULT 0,
    -- 16 bytes of SHA-256 over the five key columns above (computed by cloud-api): a narrow
    -- fixed-width key is about twice as cheap to maintain as the seven text columns.
    edge_key          bytea NOT NULL CHECK (length(edge_key) = 16),
    -- No foreign key to clusters: checking it per row costs a quarter of ingest. Each ingest
    -- transaction inserts its report row (which has the key) first, which keeps a concurrent
    -- cluster deletion waiting, and deleting a cluster deletes its edges explicitly.
    PRIMARY KEY (org_id, cluster_id, edge_key)
);
-- No index on last_seen: every read takes a whole organisation (the cross-cluster merge needs
-- all of it), found through the primary key's org_id prefix; a second index would cost ingest ~20%.

CREATE TABLE exposed_workloads (
    org_id      uuid NOT NULL,
    cluster_id  uuid NOT NULL,
    namespace   text NOT NULL,
    name        text NOT NULL,
    kind        text,
    addresses   text[] NOT NULL DEFAULT '{}',
    hostnames   text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (org_id, cluster_id, namespace, name),
    FOREIGN KEY (org_id, cluster_id) REFERENCES clusters (org_id, id) ON DELETE CASCADE
);

-- === row-level security ===

ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant ON organizations USING (id = current_org()) WITH CHECK (id = current_org());

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_tokens', 'clusters', 'reports', 'edges', 'exposed_workloads'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON %I USING (org_id = current_org()) WITH CHECK (org_id = current_org())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON organizations, api_tokens, clusters, reports, edges, exposed_workloads TO intentmap_app;

-- === credential look-ups before the organisation is known ===
-- These run as the owner (past row-level security) and return only what authentication needs.

CREATE FUNCTION auth_cluster_client(p_client_id text)
    RETURNS TABLE (org_id uuid, cluster_id uuid, cluster_name text, secret_hash text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
        SELECT c.org_id, c.id, c.name, c.secret_hash FROM clusters c
        WHERE c.client_id = p_client_id AND c.revoked_at IS NULL
    $$;

CREATE FUNCTION auth_api_token(p_token_id uuid)
    RETURNS TABLE (org_id uuid, secret_hash text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
        SELECT t.org_id, t.secret_hash FROM api_tokens t
        WHERE t.id = p_token_id AND t.revoked_at IS NULL
    $$;

REVOKE ALL ON FUNCTION auth_cluster_client(text), auth_api_token(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth_cluster_client(text), auth_api_token(uuid), current_org() TO intentmap_app;
