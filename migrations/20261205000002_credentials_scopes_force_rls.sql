-- Credentials and tenancy hardening (issue 14, items 2, 4 and 5).
--
-- 1. Row-level security is FORCEd on every tenant table, so the schema owner is under it too
--    (a superuser still is not: never serve as one; `cloud-api serve` refuses to).
-- 2. The credential look-ups that run before the organisation is known (auth_cluster_client,
--    auth_api_token) no longer run as the owner: they belong to intentmap_auth, a NOLOGIN role
--    whose only rights are SELECT on clusters and api_tokens, through a policy of its own.
--    Nobody logs in as it and the serving role is not a member of it.
-- 3. API tokens carry scopes (read, write, admin). Tokens made before this migration could do
--    everything, so they become admin tokens.
-- 4. Secrets are stored as keyed SHA-256 (HMAC) from now on. The key comes from
--    --token-hash-key-files; without one, cloud-api uses the key generated here. Existing
--    argon2id hashes keep working and are replaced by HMACs the first time they verify.
-- 5. The serving role may read which migrations are applied, so that `serve` can refuse a schema
--    that is behind the binary.

-- === 1. FORCE row-level security ===

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['organizations', 'api_tokens', 'clusters', 'reports', 'edges', 'exposed_workloads'] LOOP
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;

-- === 2. credential look-ups as intentmap_auth ===

DO $$
BEGIN
    CREATE ROLE intentmap_auth NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- Handing the functions to intentmap_auth needs membership in it (a superuser needs none).
DO $$
BEGIN
    EXECUTE format('GRANT intentmap_auth TO %I', current_user);
EXCEPTION WHEN others THEN
    RAISE NOTICE 'could not grant intentmap_auth to %: %', current_user, SQLERRM;
END
$$;

GRANT SELECT ON clusters, api_tokens TO intentmap_auth;
CREATE POLICY auth_lookup ON clusters FOR SELECT TO intentmap_auth USING (true);
CREATE POLICY auth_lookup ON api_tokens FOR SELECT TO intentmap_auth USING (true);

ALTER TABLE api_tokens
    ADD COLUMN scopes text[] NOT NULL DEFAULT ARRAY['admin']
        CHECK (cardinality(scopes) >= 1 AND scopes <@ ARRAY['read', 'write', 'admin']);
ALTER TABLE api_tokens ALTER COLUMN scopes DROP DEFAULT;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_name_length CHECK (length(name) BETWEEN 1 AND 200) NOT VALID;

DROP FUNCTION auth_api_token(uuid);
CREATE FUNCTION auth_api_token(p_token_id uuid)
    RETURNS TABLE (org_id uuid, secret_hash text, scopes text[])
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
        SELECT t.org_id, t.secret_hash, t.scopes FROM api_tokens t
        WHERE t.id = p_token_id AND t.revoked_at IS NULL
    $$;

-- A new owner needs CREATE on the functions' schema at the moment of the change, and only then.
DO $$
BEGIN
    EXECUTE format('GRANT CREATE ON SCHEMA %I TO intentmap_auth', current_schema());
END
$$;
ALTER FUNCTION auth_cluster_client(text) OWNER TO intentmap_auth;
ALTER FUNCTION auth_api_token(uuid) OWNER TO intentmap_auth;
DO $$
BEGIN
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM intentmap_auth', current_schema());
END
$$;
-- And the owner leaves intentmap_auth again: auth_lookup applies to members too, and the owner
-- is to be under row-level security like everyone else. (A later migration that changes these
-- functions grants itself the membership again for as long as it needs it.)
DO $$
BEGIN
    EXECUTE format('REVOKE intentmap_auth FROM %I', current_user);
EXCEPTION WHEN others THEN
    RAISE NOTICE 'could not revoke intentmap_auth from %: %', current_user, SQLERRM;
END
$$;
REVOKE ALL ON FUNCTION auth_cluster_client(text), auth_api_token(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth_cluster_client(text), auth_api_token(uuid) TO intentmap_app;

-- === 4. the fallback secret-hashing key ===
-- 2 x 122 random bits from pg_strong_random, through SHA-256.

CREATE TABLE token_hash_key (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    key         bytea NOT NULL CHECK (length(key) >= 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO token_hash_key (key)
    VALUES (sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text || clock_timestamp()::text, 'UTF8')));
GRANT SELECT ON token_hash_key TO intentmap_app;

-- === 5. ===

GRANT SELECT ON _sqlx_migrations TO intentmap_app;
