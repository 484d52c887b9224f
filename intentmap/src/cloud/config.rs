//! Where `intentmap cloud login` keeps API tokens: `$XDG_CONFIG_HOME/intentmap/cloud.json`, else
//! `~/.config/intentmap/cloud.json`; the file is mode 0600 in a 0700 directory, written whole
//! and renamed into place. One token per cloud address, so a token is only ever sent to the
//! cloud it was logged in to.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The login file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The cloud used when neither `--cloud-url` nor `INTENTMAP_CLOUD_URL` names one: the last
    /// one logged in to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Logins by cloud address (as normalised by [`super::client::normalise_url`]).
    #[serde(default)]
    pub clouds: BTreeMap<String, Login>,
}

/// One stored login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    pub token: String,
    /// The token's organisation and name when it was stored, for `whoami`-like messages.
    #[serde(default)]
    pub org_name: String,
    #[serde(default)]
    pub token_name: String,
}

/// A login file is a few hundred bytes; anything larger is not ours.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The login file's path.
pub fn path() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from) {
        // The XDG spec: a relative path is invalid and is ignored.
        if dir.is_absolute() {
            return Ok(dir.join("intentmap").join("cloud.json"));
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())
        .context("neither XDG_CONFIG_HOME nor HOME names a directory to keep the login in: set one, or give the token in INTENTMAP_CLOUD_TOKEN")?;
    Ok(home.join(".config").join("intentmap").join("cloud.json"))
}

impl Config {
    /// Reads the login file; a missing one is an empty login.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let meta = file.metadata().with_context(|| format!("reading {}", path.display()))?;
        if !meta.is_file() || meta.len() > MAX_CONFIG_BYTES {
            bail!(
                "{} is not intentmap's login file (not a file, or larger than 1 MiB); remove it and run `intentmap cloud login` again",
                path.display()
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                eprintln!(
                    "warning: {} holds API tokens but others may read it (mode {mode:o}); run: chmod 600 {}",
                    path.display(),
                    path.display()
                );
            }
        }
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not intentmap's login file; remove it and run `intentmap cloud login` again",
                path.display()
            )
        })
    }

    /// Writes the login file: 0600, in a 0700 directory, replacing the old one in one rename.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().context("the login file has no directory")?;
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(".cloud.json.{}.tmp", std::process::id()));
        // A file left by a killed run with this pid: never write through someone else's file.
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let text = serde_json::to_string_pretty(self)? + "\n";
        let written = (|| -> std::io::Result<()> {
            use std::io::Write;
            let mut file = options.open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_file_round_trips_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("intentmap-config-{}", std::process::id()));
        let path = dir.join("sub").join("cloud.json");
        assert_eq!(Config::load(&path).unwrap(), Config::default(), "missing is empty");
        let mut config =
            Config { current: Some("http://127.0.0.1:8080".into()), ..Default::default() };
        config.clouds.insert(
            "http://127.0.0.1:8080".into(),
            Login { token: "imt_x_y".into(), org_name: "acme".into(), token_name: "t".into() },
        );
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let mode = std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        std::fs::write(&path, "not json").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("intentmap cloud login"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
