//! Whether a directory the relay writes into can be trusted, the rule sshd's `StrictModes`
//! applies to a home directory.
//!
//! Owns: [`check_private_dir`], the one rule for every directory the relay publishes or keeps
//! files in (`shm_dir` now, a spool directory later). Must never: create, chmod or chown
//! anything (it only looks), or follow a rule other than the one written here.
//!
//! The rule: the directory belongs to root, to the relay's effective user, or to the user it
//! runs as after dropping root (`user =`); and neither its group nor others may write to it,
//! unless it is sticky (like `/dev/shm` itself: then others cannot remove or rename our files).
//! A directory owned by anyone else lets that user replace, remove or read what the relay
//! writes there, whatever the files' own modes say. Parent directories are not checked.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Checks `path` against the rule in the module docs. `what` names the directory in the
/// message (`shm_dir`); `run_as` is the uid the relay runs as after dropping root, if any. A
/// missing directory is `Ok` (the caller creates it, and then owns it).
pub fn check_private_dir(path: &Path, what: &str, run_as: Option<u32>) -> Result<(), String> {
    let md = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{what} {}: {e}", path.display())),
    };
    if !md.is_dir() {
        return Err(format!(
            "{what} {} exists and is not a directory",
            path.display()
        ));
    }
    let euid = nix::unistd::geteuid().as_raw();
    let owner = md.uid();
    if owner != 0 && owner != euid && Some(owner) != run_as {
        let mut uids = vec![0];
        for u in [Some(euid), run_as].into_iter().flatten() {
            if !uids.contains(&u) {
                uids.push(u);
            }
        }
        let names: Vec<String> = uids.iter().map(u32::to_string).collect();
        let users = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("uid {} or {last}", rest.join(", ")),
            _ => "uid 0".to_string(),
        };
        return Err(format!(
            "{what} {} is owned by uid {owner}: refusing to use it (it must belong to root or \
             to the user the relay runs as, {users}, so no other user can replace its files)",
            path.display()
        ));
    }
    let mode = md.mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(format!(
            "{what} {} is writable by group or others (mode {:04o}): refusing to use it (only \
             its owner may write to it, unless it is sticky, so no other user can replace its \
             files)",
            path.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("ringrelay-fsperm-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        p
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn modes() {
        let p = temp_dir("modes");
        chmod(&p, 0o755);
        assert_eq!(check_private_dir(&p, "shm_dir", None), Ok(()));
        chmod(&p, 0o775);
        let e = check_private_dir(&p, "shm_dir", None).unwrap_err();
        assert!(
            e.starts_with(&format!("shm_dir {} is writable", p.display())),
            "{e}"
        );
        assert!(e.contains("mode 0775"), "{e}");
        chmod(&p, 0o1777);
        assert_eq!(check_private_dir(&p, "shm_dir", None), Ok(()));
        chmod(&p, 0o700);
        std::fs::remove_dir(&p).unwrap();
        assert_eq!(
            check_private_dir(&p, "shm_dir", None),
            Ok(()),
            "missing is fine"
        );
        std::fs::write(&p, b"x").unwrap();
        let e = check_private_dir(&p, "spool", None).unwrap_err();
        assert!(e.contains("is not a directory"), "{e}");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn owners() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("note: not root: cannot chown; ownership cases skipped");
            return;
        }
        let p = temp_dir("owners");
        chmod(&p, 0o755);
        std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
        let e = check_private_dir(&p, "shm_dir", None).unwrap_err();
        assert!(
            e.starts_with(&format!("shm_dir {} is owned by uid 65534", p.display())),
            "{e}"
        );
        assert!(e.contains("runs as, uid 0, so"), "{e}");
        assert_eq!(check_private_dir(&p, "shm_dir", Some(65534)), Ok(()));
        let e = check_private_dir(&p, "shm_dir", Some(1000)).unwrap_err();
        assert!(e.contains("uid 0 or 1000"), "{e}");
        std::fs::remove_dir(&p).unwrap();
    }
}
