//! The serving login role. `migrate` (as the schema owner) makes it a member of `intentmap_app`
//! with the password of its URL; `serve` connects as it and refuses to start when it, or any
//! role it can `SET ROLE` to, is a superuser, bypasses row-level security or owns a table — so
//! no statement on a serving connection, `RESET ROLE` included, gets past row-level security.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection, PgPool};

use super::{APP_ROLE, MIGRATOR};

#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("{0}")]
    BadUrl(String),
    #[error("{0}")]
    Unsafe(String),
    #[error("the database schema is behind this binary (missing migration {0}); run `cloud-api migrate --database-url <owner URL>` first")]
    Behind(i64),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

const HOW: &str = "serve as a login role of its own: `cloud-api migrate --database-url <owner URL> --app-database-url \
postgres://intentmap_api:<password>@<host>/<database>` creates it, then give that URL to `serve --database-url`";

/// `(user, password)` of a `postgres://user:password@host/db` URL, percent-decoded.
pub fn url_credentials(url: &str) -> Result<(String, Option<String>), RoleError> {
    let bad = || {
        RoleError::BadUrl(format!("the serving URL must name its login role: postgres://<role>:<password>@<host>/<database> (got {})", redact(url)))
    };
    let rest = url.split_once("://").ok_or_else(bad)?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@').ok_or_else(bad)?;
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    let user = percent_decode(user).ok_or_else(bad)?;
    if user.is_empty() {
        return Err(bad());
    }
    let password = match password {
        Some(p) => Some(percent_decode(p).ok_or_else(bad)?),
        None => None,
    };
    Ok((user, password.filter(|p| !p.is_empty())))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:…{}", &url[..scheme + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// `url` logging in as `role` with `password` instead of its own user.
pub fn login_url(url: &str, role: &str, password: &str) -> Result<String, RoleError> {
    let scheme_end = url
        .find("://")
        .ok_or_else(|| RoleError::BadUrl(format!("{} is not a postgres:// URL", redact(url))))?
        + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host =
        rest[..authority_end].rsplit_once('@').map_or(&rest[..authority_end], |(_, host)| host);
    Ok(format!(
        "{}{}:{}@{host}{}",
        &url[..scheme_end],
        percent_encode(role),
        percent_encode(password),
        &rest[authority_end..]
    ))
}

/// For the demo and tests: a serving URL for the database of `owner_url`, as a login role named
/// after it (databases on one server never share one), with a password derived from the owner's
/// URL (so restarts and replicas agree on it, and only who knows the owner's URL knows it).
pub fn dedicated_login_url(owner_url: &str) -> Result<String, RoleError> {
    let hex = |label: &str| -> String {
        Sha256::digest([label.as_bytes(), owner_url.as_bytes()].concat())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    login_url(
        owner_url,
        &format!("intentmap_api_{}", &hex("intentmap serving role\0")[..16]),
        &hex("intentmap serving password\0"),
    )
}

/// As the schema owner (`owner_url`): creates the login role `app_url` names, or updates its
/// password, and makes it a member of `intentmap_app` (and of nothing else). Safe to run from
/// several replicas at once.
pub async fn provision_login(owner_url: &str, app_url: &str) -> Result<String, RoleError> {
    let (role, password) = url_credentials(app_url)?;
    let mut conn = PgConnection::connect(owner_url).await?;
    let owner =
        sqlx::query_scalar!(r#"SELECT current_user::text AS "user!""#).fetch_one(&mut conn).await?;
    if owner == role {
        return Err(RoleError::Unsafe(format!(
            "the serving URL logs in as the schema owner {role:?}; {HOW}"
        )));
    }
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        match provision_once(&mut conn, &role, password.as_deref()).await {
            // Roles are shared by the whole server: another migrate may be changing this one.
            Err(e) if attempt < 5 && is_concurrent_update(&e) => {
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await
            }
            other => break other,
        }
    };
    let _ = conn.close().await;
    result?;
    Ok(role)
}

async fn provision_once(
    conn: &mut PgConnection,
    role: &str,
    password: Option<&str>,
) -> Result<(), sqlx::Error> {
    let create = sqlx::query_scalar!(
        r#"SELECT format('DO $do$ BEGIN CREATE ROLE %I LOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $do$', $1::text) AS "sql!""#,
        role
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::raw_sql(&create).execute(&mut *conn).await?;
    let alter = match password {
        Some(p) => {
            sqlx::query_scalar!(
                r#"SELECT format('ALTER ROLE %I LOGIN INHERIT PASSWORD %L', $1::text, $2::text) AS "sql!""#,
                role,
                p
            )
            .fetch_one(&mut *conn)
            .await?
        }
        None => {
            sqlx::query_scalar!(
                r#"SELECT format('ALTER ROLE %I LOGIN INHERIT', $1::text) AS "sql!""#,
                role
            )
            .fetch_one(&mut *conn)
            .await?
        }
    };
    sqlx::raw_sql(&alter).execute(&mut *conn).await?;
    let grant = sqlx::query_scalar!(
        r#"SELECT format('GRANT %I TO %I', $1::text, $2::text) AS "sql!""#,
        APP_ROLE,
        role
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::raw_sql(&grant).execute(&mut *conn).await?;
    Ok(())
}

fn is_concurrent_update(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| {
        d.message().contains("concurrently")
            || d.code().is_some_and(|c| c == "23505" || c == "40001")
    })
}

/// Whether `url`'s role may apply migrations: a superuser, the owner of the schema's tables, or
/// anyone on a database without them yet. `admin` migrates only then, so it works with the
/// serving role's URL too.
pub async fn may_migrate(url: &str) -> Result<bool, sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    let may = sqlx::query_scalar!(
        r#"SELECT r.rolsuper OR to_regclass('organizations') IS NULL
                OR EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = to_regclass('organizations') AND c.relowner = r.oid) AS "may!"
         FROM pg_roles r WHERE r.rolname = current_user"#
    )
    .fetch_one(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok(may)
}

/// Refuses a serving connection that could get past row-level security, or a schema that is
/// behind this binary.
pub async fn check_serving_role(pool: &PgPool) -> Result<(), RoleError> {
    let rows = sqlx::query!(
        r#"SELECT r.rolname::text AS "role!", r.rolsuper AS "superuser!", r.rolbypassrls AS "bypass!",
                EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE c.relowner = r.oid AND n.nspname = current_schema()) AS "owns!"
         FROM pg_roles r WHERE pg_has_role(current_user, r.oid, 'MEMBER') ORDER BY r.rolname"#
    )
    .fetch_all(pool)
    .await?;
    let rows: Vec<(String, bool, bool, bool)> =
        rows.into_iter().map(|r| (r.role, r.superuser, r.bypass, r.owns)).collect();
    let user =
        sqlx::query_scalar!(r#"SELECT current_user::text AS "user!""#).fetch_one(pool).await?;
    for (role, superuser, bypass, owns) in &rows {
        let via = if *role == user {
            format!("the serving role {user:?}")
        } else {
            format!("role {role:?}, which the serving role {user:?} can SET ROLE to,")
        };
        let what = match (superuser, bypass, owns) {
            (true, _, _) => "is a superuser",
            (_, true, _) => "bypasses row-level security",
            (_, _, true) => "owns tables of the schema",
            _ => continue,
        };
        return Err(RoleError::Unsafe(format!(
            "{via} {what}, so row-level security would not hold; {HOW}"
        )));
    }
    if !rows.iter().any(|(role, ..)| role == APP_ROLE) {
        return Err(RoleError::Unsafe(format!("the serving role {user:?} is not a member of {APP_ROLE} and cannot read the tables; {HOW}")));
    }
    let applied = sqlx::query_scalar!("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
        .map_err(|e| RoleError::Unsafe(format!("cannot read which migrations are applied ({e}); run `cloud-api migrate --database-url <owner URL>` first")))?;
    if let Some(missing) = MIGRATOR.iter().map(|m| m.version).find(|v| !applied.contains(v)) {
        return Err(RoleError::Behind(missing));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_login_role() {
        let (user, password) = url_credentials(
            "postgres://intentmap_api:p%40ss%3Aword@db.example:5432/intentmap?sslmode=require",
        )
        .unwrap();
        assert_eq!((user.as_str(), password.as_deref()), ("intentmap_api", Some("p@ss:word")));
        assert_eq!(url_credentials("postgres://me@h/db").unwrap(), ("me".to_owned(), None));
        assert!(url_credentials("postgres://h/db").is_err());
        assert!(url_credentials("postgres://:pw@h/db").is_err());
        let url =
            login_url("postgres://postgres@127.0.0.1:5432/t_1?sslmode=disable", "api", "a/b@c")
                .unwrap();
        assert_eq!(url, "postgres://api:a%2Fb%40c@127.0.0.1:5432/t_1?sslmode=disable");
        assert_eq!(url_credentials(&url).unwrap(), ("api".to_owned(), Some("a/b@c".to_owned())));
        assert_eq!(login_url("postgres://h:1/db", "r", "p").unwrap(), "postgres://r:p@h:1/db");
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:…@h/db");
        let a = dedicated_login_url("postgres://postgres@h/a").unwrap();
        let b = dedicated_login_url("postgres://postgres@h/b").unwrap();
        assert_ne!(url_credentials(&a).unwrap().0, url_credentials(&b).unwrap().0);
        assert!(url_credentials(&a).unwrap().0.len() < 63);
    }
}
