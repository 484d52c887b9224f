//! Talking to the cloud API: the address, the token, bounded answers, and refusals explained in
//! terms of what to run next.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::output::clean;

/// The largest answer read: a full export of an organisation at the cloud's edge limit.
const MAX_ANSWER_BYTES: usize = 1 << 30;
/// API tokens are `imt_<id>_<secret>`, well under this.
const MAX_TOKEN_CHARS: usize = 1024;

/// Where the token in use came from, so a refusal can say which one to fix.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// `INTENTMAP_CLOUD_TOKEN`.
    CloudEnv,
    /// `--token` / `INTENTMAP_TOKEN` (an `imt_` token).
    Env,
    /// The login file.
    Login(PathBuf),
    /// Standard input, during `login`.
    Stdin,
}

impl TokenSource {
    fn fix(&self) -> String {
        match self {
            TokenSource::CloudEnv => "fix or unset INTENTMAP_CLOUD_TOKEN".into(),
            TokenSource::Env => "fix or unset INTENTMAP_TOKEN (or --token)".into(),
            TokenSource::Login(path) => {
                format!(
                    "run `intentmap cloud login` with a valid token (the stored one is in {})",
                    path.display()
                )
            }
            TokenSource::Stdin => "give `intentmap cloud login` a valid token".into(),
        }
    }
}

/// A token and where it came from.
#[derive(Debug, Clone)]
pub struct Token {
    pub secret: String,
    pub source: TokenSource,
}

/// Checks that `token` looks like a cloud API token before it goes into a header.
pub fn check_token(token: &str) -> anyhow::Result<()> {
    if token.is_empty() {
        bail!("the API token is empty");
    }
    if token.chars().count() > MAX_TOKEN_CHARS || !token.chars().all(|c| c.is_ascii_graphic()) {
        bail!("that is not an API token (at most {MAX_TOKEN_CHARS} printable ASCII characters, no spaces)");
    }
    if !token.starts_with("imt_") {
        bail!("that is not a cloud API token: they start with imt_ (`cloud-api admin create-org` or `intentmap cloud tokens create` prints one)");
    }
    Ok(())
}

/// The cloud's address as the CLI keeps it: `http(s)://host[:port][/prefix]`, no trailing `/`.
/// Plain `http://` only to this machine's loopback unless `allow_insecure`: the token would
/// otherwise cross the network readable by anyone on the path.
pub fn normalise_url(raw: &str, allow_insecure: bool) -> anyhow::Result<String> {
    let hint =
        "give the cloud API's address as https://HOST[:PORT] (--cloud-url or INTENTMAP_CLOUD_URL)";
    if raw.len() > 2048 {
        bail!("the cloud URL is longer than 2048 characters; {hint}");
    }
    let url = Url::parse(raw.trim())
        .map_err(|e| anyhow!("{:?} is not a URL ({e}); {hint}", clean(raw)))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("{:?}: the scheme must be https (or http to this machine); {hint}", clean(raw));
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("the cloud URL must not carry a user or password; the API token is the credential");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("the cloud URL must not have a query or fragment; {hint}");
    }
    let host = url.host_str().context("the cloud URL has no host")?;
    if url.scheme() == "http" && !allow_insecure && !is_loopback(host) {
        bail!(
            "refusing to send the API token over plain http:// to {host}: use https://, or pass --allow-insecure-cloud-url if the network to it is trusted"
        );
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// What a request is for, so a refusal can say what to do.
pub struct Doing<'a> {
    /// "list the clusters", ...
    pub what: &'a str,
    /// Said after a 404.
    pub not_found: &'a str,
    /// Said after a 422.
    pub unprocessable: &'a str,
    /// The scope the request needs, for a 403.
    pub scope: &'a str,
}

/// A successful answer, read whole.
pub struct Answer {
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json<T: DeserializeOwned>(&self, base: &str) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            anyhow!(
                "the answer from {base} is not what the cloud API sends ({e}, content type {:?}); is --cloud-url the cloud API's address, and are the CLI and the cloud of the same version?",
                clean(&self.content_type)
            )
        })
    }

    pub fn text(&self) -> anyhow::Result<String> {
        String::from_utf8(self.body.clone()).context("the cloud's answer is not UTF-8 text")
    }
}

/// One cloud, with or without a token.
pub struct Cloud {
    pub base: String,
    http: reqwest::Client,
    pub token: Option<Token>,
}

impl Cloud {
    pub fn new(
        base: String,
        token: Option<Token>,
        ca_file: Option<&PathBuf>,
    ) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(15))
            // A redirect could carry the token elsewhere; the API never redirects.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(file) = ca_file {
            let pem = std::fs::read(file)
                .with_context(|| format!("reading the CA file {}", file.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!("{} holds no PEM certificate (--cloud-ca-file)", file.display())
            })?;
            if certs.is_empty() {
                bail!("{} holds no PEM certificate (--cloud-ca-file)", file.display());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Cloud { base, http: builder.build()?, token })
    }

    /// `base` + the path segments, each percent-encoded.
    fn url(&self, segments: &[&str]) -> anyhow::Result<Url> {
        let mut url = Url::parse(&self.base)?;
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| anyhow!("{} cannot take a path", self.base))?;
            path.pop_if_empty();
            for s in segments {
                path.push(s);
            }
        }
        Ok(url)
    }

    /// Sends one request and reads the whole answer (at most 1 GiB); a refusal becomes an
    /// error saying what to do.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
        doing: &Doing<'_>,
    ) -> anyhow::Result<Answer> {
        let token = self.token.as_ref().ok_or_else(|| {
            anyhow!(
                "no API token for {}: run `intentmap cloud login --cloud-url {}`, or set INTENTMAP_CLOUD_TOKEN",
                self.base,
                self.base
            )
        })?;
        let mut request =
            self.http.request(method, self.url(segments)?).bearer_auth(&token.secret).header(
                reqwest::header::ACCEPT,
                "application/json, application/yaml, text/vnd.graphviz",
            );
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut reply = request.send().await.map_err(|e| {
            anyhow!(
                "cannot reach the cloud at {} to {}: {e}\nIs the address right (--cloud-url / INTENTMAP_CLOUD_URL) and the cloud up?",
                self.base,
                doing.what
            )
        })?;
        let status = reply.status();
        let retry_after = reply
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let content_type = reply
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut body = Vec::new();
        while let Some(chunk) = reply
            .chunk()
            .await
            .with_context(|| format!("reading the cloud's answer to {}", doing.what))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                bail!(
                    "the cloud's answer to {} is larger than {} MiB; ask for less ({})",
                    doing.what,
                    MAX_ANSWER_BYTES >> 20,
                    doing.unprocessable
                );
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(Answer { content_type, body });
        }
        Err(self.refusal(status, retry_after, &body, token, doing))
    }

    /// What a refusal means and what to do about it.
    fn refusal(
        &self,
        status: StatusCode,
        retry_after: Option<u64>,
        body: &[u8],
        token: &Token,
        doing: &Doing<'_>,
    ) -> anyhow::Error {
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(clean));
        let Some(message) = message else {
            let snippet: String = String::from_utf8_lossy(body).chars().take(200).collect();
            return anyhow!(
                "{} answered {status} to the request to {}, not in the cloud API's error form: is --cloud-url the cloud API's address? ({})",
                self.base,
                doing.what,
                clean(&snippet)
            );
        };
        let next = match status.as_u16() {
            400 => "Check the arguments (`intentmap cloud --help`).".to_owned(),
            401 => format!(
                "The cloud does not accept this API token (revoked, mistyped, or for another cloud): {}. An admin makes a new one with `intentmap cloud tokens create NAME --scopes read`, an operator with `cloud-api admin create-token`.",
                token.source.fix()
            ),
            403 => format!(
                "This needs a token with the `{}` scope: ask an admin of the organisation for one (`intentmap cloud tokens create NAME --scopes {}`), then run `intentmap cloud login` with it.",
                doing.scope, doing.scope
            ),
            404 => doing.not_found.to_owned(),
            409 => "Choose another name.".to_owned(),
            422 => doing.unprocessable.to_owned(),
            429 => format!(
                "Too many failed credential checks from this address: retry in {} s.",
                retry_after.unwrap_or(1)
            ),
            503 => format!(
                "The cloud is busy or cannot reach its database: retry in {} s.",
                retry_after.unwrap_or(1)
            ),
            s if s >= 500 => {
                "The cloud failed: retry, and if it keeps failing tell its operator (the cause is in its log).".to_owned()
            }
            _ => String::new(),
        };
        anyhow!("the cloud refused to {} ({status}): {message}\n{next}", doing.what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised_and_plain_http_stays_on_this_machine() {
        assert_eq!(
            normalise_url("http://127.0.0.1:8080/", false).unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(normalise_url("http://localhost:8080", false).unwrap(), "http://localhost:8080");
        assert_eq!(normalise_url("http://[::1]:8080", false).unwrap(), "http://[::1]:8080");
        assert_eq!(
            normalise_url("https://cloud.example.com/intentmap/", false).unwrap(),
            "https://cloud.example.com/intentmap"
        );
        let err = normalise_url("http://cloud.example.com", false).unwrap_err().to_string();
        assert!(err.contains("--allow-insecure-cloud-url"), "{err}");
        assert!(normalise_url("http://cloud.example.com", true).is_ok());
        assert!(normalise_url("ftp://cloud.example.com", false).is_err());
        assert!(normalise_url("https://user:pw@cloud.example.com", false).is_err());
        assert!(normalise_url("https://cloud.example.com/?a=b", false).is_err());
        assert!(normalise_url("cloud.example.com", false).is_err());
    }

    #[test]
    fn tokens_are_checked_before_they_go_into_a_header() {
        assert!(check_token("imt_0123_abc").is_ok());
        assert!(check_token("").is_err());
        assert!(check_token("imt_a b").is_err());
        assert!(check_token("imt_a\r\nX-Evil: 1").is_err());
        assert!(check_token(&format!("imt_{}", "a".repeat(2000))).is_err());
        let err = check_token("eyJhbGciOi.x.y").unwrap_err().to_string();
        assert!(err.contains("imt_"), "{err}");
    }
}
