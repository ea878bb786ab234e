//! The keys file: loaded at start, then reloaded whenever it changes, so keys can be
//! added, limited or removed without a restart.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use tideway_http::{ApiKeys, KeyRing};

/// How often the file's modification time is looked at.
const POLL: Duration = Duration::from_secs(2);

/// Reads and checks the keys file.
pub(crate) fn load(path: &std::path::Path) -> anyhow::Result<ApiKeys> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the keys file {}", path.display()))?;
    ApiKeys::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Replaces the ring's keys each time the file changes. A file that no longer parses is
/// reported and ignored: the keys in force stay until it is fixed.
pub(crate) fn watch(path: PathBuf, plain: Option<String>, ring: KeyRing) {
    let modified = |path: &PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut seen = modified(&path);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(POLL).await;
            let now = modified(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match reload(&path, plain.as_deref(), &ring) {
                Ok(count) => {
                    tracing::info!(keys = count, file = %path.display(), "keys file reloaded")
                }
                Err(err) => {
                    tracing::error!(error = %err, "keys file not reloaded; the keys in force stay")
                }
            }
        }
    });
}

/// Puts the file's keys (and the plain ones) in force, or changes nothing if it is broken.
fn reload(path: &std::path::Path, plain: Option<&str>, ring: &KeyRing) -> anyhow::Result<usize> {
    let keys = plain
        .map(ApiKeys::parse)
        .unwrap_or_default()
        .merged(load(path)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let count = keys.len();
    ring.replace(keys);
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_file_keeps_the_keys_in_force() {
        let path = std::env::temp_dir().join(format!("tideway-reload-{}.json", std::process::id()));
        std::fs::write(&path, r#"{"keys": [{"name": "a", "key": "s1"}]}"#).unwrap();
        let ring = KeyRing::default();
        assert_eq!(reload(&path, Some("plain"), &ring).unwrap(), 2);
        std::fs::write(&path, "{ not json").unwrap();
        let err = reload(&path, Some("plain"), &ring).unwrap_err();
        assert!(err.to_string().contains("keys file"), "{err}");
        assert_eq!(ring.current().len(), 2, "unchanged");
        assert!(ring.current().named("a").is_some());
        let _ = std::fs::remove_file(&path);
    }
}
