//! Finds the host's configured Debian mirror, so image builds use the same
//! (possibly local or proxied) mirror as the host's apt.

use std::path::Path;

/// Used when the host names no Debian mirror.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The Debian mirror configured on this host, read from
/// `/etc/apt/sources.list` and `/etc/apt/sources.list.d/*.{list,sources}`.
pub fn host_debian_mirror() -> String {
    mirror_from_apt_dir(Path::new("/etc/apt")).unwrap_or_else(|| DEFAULT_MIRROR.to_string())
}

/// Looks in `APT_DIR/sources.list` then `APT_DIR/sources.list.d/` (sorted).
pub fn mirror_from_apt_dir(apt_dir: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(apt_dir.join("sources.list")) {
        if let Some(m) = mirror_from_one_line(&text) {
            return Some(m);
        }
    }
    let mut entries: Vec<_> = std::fs::read_dir(apt_dir.join("sources.list.d"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let found = match path.extension().and_then(|e| e.to_str()) {
            Some("sources") => mirror_from_deb822(&text),
            Some("list") => mirror_from_one_line(&text),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// A URI is the main archive (not security, not a third-party repo) when
/// its path ends in `/debian`.
fn is_debian_archive(uri: &str) -> bool {
    let u = uri.trim_end_matches('/');
    (u.starts_with("http://") || u.starts_with("https://") || u.starts_with("file:/"))
        && u.ends_with("/debian")
}

/// One-line format: `deb [opts] URI SUITE COMPONENTS...`.
pub fn mirror_from_one_line(text: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut uri = words.next()?;
        if uri.starts_with('[') {
            // Options may span several words: skip to the closing bracket.
            let mut w = Some(uri);
            while let Some(cur) = w {
                if cur.ends_with(']') {
                    break;
                }
                w = words.next();
            }
            uri = words.next()?;
        }
        if is_debian_archive(uri) {
            return Some(uri.trim_end_matches('/').to_string());
        }
    }
    None
}

/// deb822 format: stanzas separated by blank lines with `Types:` and `URIs:`.
pub fn mirror_from_deb822(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let mut types_deb = false;
        let mut enabled = true;
        let mut uris: Vec<&str> = Vec::new();
        for line in stanza.lines() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "types" => types_deb = value.split_whitespace().any(|t| t == "deb"),
                "uris" => uris = value.split_whitespace().collect(),
                "enabled" => enabled = value.trim() != "no",
                _ => {}
            }
        }
        if !(types_deb && enabled) {
            continue;
        }
        if let Some(u) = uris.into_iter().find(|u| is_debian_archive(u)) {
            return Some(u.trim_end_matches('/').to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_picks_main_archive_not_security() {
        let text = "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n";
        assert_eq!(
            mirror_from_deb822(text).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn deb822_skips_disabled_and_deb_src_stanzas() {
        let text = "Types: deb-src\nURIs: http://a.example/debian\n\nTypes: deb\nEnabled: no\nURIs: http://b.example/debian\n\nTypes: deb\nURIs: http://c.example/debian/\n";
        assert_eq!(
            mirror_from_deb822(text).as_deref(),
            Some("http://c.example/debian")
        );
    }

    #[test]
    fn one_line_with_options_finds_uri() {
        let text = "# deb http://old.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_from_one_line(text).as_deref(),
            Some("http://m.example/debian")
        );
    }

    #[test]
    fn one_line_ignores_third_party_repos() {
        let text = "deb https://packages.cloud.google.com/apt cloud-sdk main\n";
        assert_eq!(mirror_from_one_line(text), None);
    }

    #[test]
    fn apt_dir_prefers_sources_list_then_sorted_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sources.list.d")).expect("mkdir");
        std::fs::write(
            dir.path().join("sources.list.d/b.sources"),
            "Types: deb\nURIs: http://b.example/debian\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("sources.list.d/a.list"),
            "deb http://a.example/debian bookworm main\n",
        )
        .expect("write");

        let found = mirror_from_apt_dir(dir.path());

        assert_eq!(found.as_deref(), Some("http://a.example/debian"));
    }

    #[test]
    fn apt_dir_without_debian_entries_returns_none() {
        let dir = tempfile::tempdir().expect("tempdir");

        assert_eq!(mirror_from_apt_dir(dir.path()), None);
    }
}
