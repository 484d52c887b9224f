//! The flags saying how observations reach the mapper, shared by the node agent and `aws-proxy`.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use observation_ship::{Credentials, Shipper};

/// What differs between the binaries that flatten [`ShipArgs`]: their words in `--help` (help
/// texts as clap shows them: no full stop at the end), where their token file is mounted,
/// whether the flags are global to every subcommand, and where the last two flags sit in
/// `--help` (`display_order`; `None`: in the order they are flattened).
pub trait ShipProfile: Debug + Clone + Send + Sync + 'static {
    const MAPPER_URL_HELP: &'static str;
    const SHARED_TOKEN_HELP: &'static str;
    const TOKEN_FILE_HELP: Option<&'static str>;
    /// `--token-file`'s default.
    const TOKEN_FILE: &'static str;
    const BUFFER_HELP: &'static str;
    /// Whether the flags are accepted after any subcommand too.
    const GLOBAL: bool;
    const SHIP_INTERVAL_ORDER: Option<usize>;
    const BUFFER_ORDER: Option<usize>;
}

// `--mapper-url`, `--shared-token`, `--token-file`, `--ship-interval-seconds` and `--buffer`
// (`MAPPER_URL`, `OBSERVATION_SHARED_TOKEN`, `TOKEN_FILE`, `SHIP_INTERVAL_SECONDS`, `BUFFER`):
// flatten into a clap `Args` with `#[command(flatten)]`. (Plain comments: clap would make doc
// comments here the `about` of every command that flattens this, and the help of the flags.)
#[derive(Debug, Clone, clap::Args)]
pub struct ShipArgs<P: ShipProfile> {
    #[arg(
        long,
        env = "MAPPER_URL",
        default_value = "http://intentmap-mapper:9090",
        help = P::MAPPER_URL_HELP,
        global = P::GLOBAL
    )]
    pub mapper_url: String,
    #[arg(
        long,
        env = "OBSERVATION_SHARED_TOKEN",
        hide_env_values = true,
        help = P::SHARED_TOKEN_HELP,
        global = P::GLOBAL
    )]
    pub shared_token: Option<String>,
    #[arg(
        long,
        env = "TOKEN_FILE",
        default_value = P::TOKEN_FILE,
        help = P::TOKEN_FILE_HELP,
        global = P::GLOBAL
    )]
    pub token_file: PathBuf,
    #[arg(
        long,
        env = "SHIP_INTERVAL_SECONDS",
        default_value_t = 1.0,
        help = "Seconds between batches to the mapper",
        global = P::GLOBAL,
        display_order = P::SHIP_INTERVAL_ORDER
    )]
    pub ship_interval_seconds: f64,
    #[arg(
        long,
        env = "BUFFER",
        default_value_t = 100_000,
        help = P::BUFFER_HELP,
        global = P::GLOBAL,
        display_order = P::BUFFER_ORDER
    )]
    pub buffer: usize,
    #[arg(skip)]
    profile: PhantomData<P>,
}

impl<P: ShipProfile> ShipArgs<P> {
    /// The shared token if one is given, else the token file (re-read for every batch).
    pub fn credentials(&self) -> Credentials {
        match &self.shared_token {
            Some(t) => Credentials::Shared(t.clone()),
            None => Credentials::TokenFile(self.token_file.clone()),
        }
    }

    /// Time between batches: `--ship-interval-seconds`, at least 50 ms.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.ship_interval_seconds.max(0.05))
    }

    /// The sender of batches to `--mapper-url`, naming `source` as their sender.
    pub fn shipper(&self, source: String) -> anyhow::Result<Shipper> {
        Ok(Shipper {
            mapper_url: self.mapper_url.clone(),
            credentials: self.credentials(),
            source,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .context("building the HTTP client for the mapper")?,
            max_batch: 5_000,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::Path;

    #[derive(Debug, Clone)]
    struct Test;

    impl ShipProfile for Test {
        const MAPPER_URL_HELP: &'static str = "The mapper.";
        const SHARED_TOKEN_HELP: &'static str = "A shared token.";
        const TOKEN_FILE_HELP: Option<&'static str> = None;
        const TOKEN_FILE: &'static str = "/token";
        const BUFFER_HELP: &'static str = "Held items.";
        const GLOBAL: bool = false;
        const SHIP_INTERVAL_ORDER: Option<usize> = None;
        const BUFFER_ORDER: Option<usize> = None;
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        ship: ShipArgs<Test>,
    }

    #[test]
    fn defaults_and_credentials() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.ship.mapper_url, "http://intentmap-mapper:9090");
        assert_eq!(cli.ship.token_file, PathBuf::from("/token"));
        assert_eq!(cli.ship.buffer, 100_000);
        assert_eq!(cli.ship.interval(), Duration::from_secs(1));
        assert!(
            matches!(cli.ship.credentials(), Credentials::TokenFile(p) if p == Path::new("/token"))
        );

        let cli = Cli::try_parse_from(["x", "--shared-token", "s", "--ship-interval-seconds", "0"])
            .unwrap();
        assert!(matches!(cli.ship.credentials(), Credentials::Shared(t) if t == "s"));
        assert_eq!(cli.ship.interval(), Duration::from_millis(50));
    }
}
