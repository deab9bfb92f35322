//! Users from the image's own `/etc/passwd` and `/etc/group` (the agent
//! has no libc NSS). Root works without a passwd entry: distroless images
//! may have none.

use std::path::{Path, PathBuf};

/// Who a session runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from `/etc/group`), without `gid`.
    pub groups: Vec<u32>,
    pub home: PathBuf,
    /// The login shell if the image has it as an executable file, else
    /// `/bin/sh` if that exists, else none (commands then run without one).
    pub shell: Option<PathBuf>,
}

/// Looks `name` up in `root/etc/passwd` (root = `/` in a guest).
pub fn lookup(root: &Path, name: &str) -> Option<User> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let entry = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && f[0] == name).then(|| {
            (
                f[2].parse::<u32>().ok(),
                f[3].parse::<u32>().ok(),
                f[5].to_string(),
                f[6].to_string(),
            )
        })
    });
    let (uid, gid, home, shell) = match entry {
        Some((Some(uid), Some(gid), home, shell)) => (uid, gid, home, shell),
        Some(_) => return None, // a malformed entry is not guessed at
        None if name == "root" => (0, 0, "/root".into(), String::new()),
        None => return None,
    };
    let home = if home.is_empty() { "/".into() } else { home };
    Some(User {
        name: name.to_string(),
        uid,
        gid,
        groups: supplementary_groups(root, name, gid),
        home: PathBuf::from(home),
        shell: usable_shell(root, &shell),
    })
}

fn supplementary_groups(root: &Path, name: &str, primary: u32) -> Vec<u32> {
    let text = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    let mut out: Vec<u32> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || !f[3].split(',').any(|m| m == name) {
                return None;
            }
            f[2].parse().ok()
        })
        .filter(|g| *g != primary)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn usable_shell(root: &Path, shell: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &str| {
        let rel = p.trim_start_matches('/');
        std::fs::metadata(root.join(rel))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let nologin = shell.ends_with("/nologin") || shell.ends_with("/false");
    if !shell.is_empty() && !nologin && executable(shell) {
        return Some(PathBuf::from(shell));
    }
    executable("/bin/sh").then(|| PathBuf::from("/bin/sh"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree(passwd: &str, group: &str, shells: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(t.path().join("etc/group"), group).unwrap();
        for s in shells {
            let p = t.path().join(s.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "#!").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        t
    }

    #[test]
    fn a_user_gets_ids_home_groups_and_shell_from_the_image() {
        let t = tree(
            "root:x:0:0:root:/root:/bin/bash\ndev:x:1000:1000::/home/dev:/bin/bash\n",
            "dev:x:1000:\ndocker:x:998:dev,other\nwheel:x:10:dev\n",
            &["/bin/bash", "/bin/sh"],
        );
        let u = lookup(t.path(), "dev").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.groups, vec![10, 998]);
        assert_eq!(u.home, PathBuf::from("/home/dev"));
        assert_eq!(u.shell, Some(PathBuf::from("/bin/bash")));
        assert_eq!(lookup(t.path(), "nobody-here"), None);
    }

    #[test]
    fn a_missing_login_shell_falls_back_to_sh_then_to_none() {
        let t = tree("app:x:10:10::/app:/bin/zsh\n", "", &["/bin/sh"]);
        assert_eq!(
            lookup(t.path(), "app").unwrap().shell,
            Some(PathBuf::from("/bin/sh"))
        );
        let bare = tree("app:x:10:10::/app:/bin/zsh\n", "", &[]);
        assert_eq!(lookup(bare.path(), "app").unwrap().shell, None);
    }

    #[test]
    fn root_works_without_a_passwd_file_and_bad_entries_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = lookup(t.path(), "root").unwrap();
        assert_eq!((root.uid, root.home.clone()), (0, PathBuf::from("/root")));
        let bad = tree("dev:x:abc:1::/home/dev:/bin/sh\n", "", &[]);
        assert_eq!(lookup(bad.path(), "dev"), None);
    }
}
