//! Tests of the site loader against real temporary directories.

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::loader::{load_site_dir, load_vault_file, read_site_files, LoadError, MAX_FILE_BYTES};

fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A small valid site.
fn valid_site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "roster.yaml",
        b"users:\n  emo: { authentik_user: e, k8s_user: emo, tier: power-user }\n",
    );
    write(
        root,
        "tiers.yaml",
        b"tiers:\n  power-user: { bundles: [user-base] }\n",
    );
    write(
        root,
        "site.yaml",
        b"bundles:\n  user-base:\n    - file: { path: \"{{ user.home }}/.kube/config\", template: kube/config.j2 }\n",
    );
    write(
        root,
        "files/kube/config.j2",
        b"server: {{ site.vars.cluster_url }}\n",
    );
    write(root, "files/motd", b"hello\n");
    write(root, "README.md", b"not part of the site\n");
    write(root, "vault-data.yaml", b"secret/platform: {}\n");
    dir
}

#[test]
fn loads_a_site_directory() {
    let dir = valid_site();
    let files = read_site_files(dir.path()).unwrap();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [
            "files/kube/config.j2",
            "files/motd",
            "roster.yaml",
            "site.yaml",
            "tiers.yaml"
        ]
    );
    let site = load_site_dir(dir.path()).unwrap();
    assert_eq!(site.roster.users[0].name, "emo");
    assert_eq!(
        site.files.keys().collect::<Vec<_>>(),
        ["kube/config.j2", "motd"]
    );
    assert_eq!(site.hash, crate::site::site_hash(&files));
}

#[test]
fn site_errors_come_back_as_site_errors() {
    let dir = valid_site();
    fs::remove_file(dir.path().join("tiers.yaml")).unwrap();
    match load_site_dir(dir.path()) {
        Err(LoadError::Site(errors)) => assert_eq!(
            errors.to_string(),
            "tiers.yaml:1: file is missing; create tiers.yaml in the site directory"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_site_dir(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(err, LoadError::Io { .. }), "{err:?}");
    assert!(err.to_string().starts_with("failed to read "), "{err}");
}

#[test]
fn symlinks_are_refused() {
    let dir = valid_site();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "shadow", b"root:x:0:0\n");
    symlink(outside.path().join("shadow"), dir.path().join("files/leak")).unwrap();
    let err = read_site_files(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::NotRegularFile { path } if path.ends_with("files/leak")),
        "{err:?}"
    );

    let dir = valid_site();
    fs::remove_file(dir.path().join("roster.yaml")).unwrap();
    symlink(
        outside.path().join("shadow"),
        dir.path().join("roster.yaml"),
    )
    .unwrap();
    let err = read_site_files(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::NotRegularFile { path } if path.ends_with("roster.yaml")),
        "{err:?}"
    );

    let dir = valid_site();
    fs::remove_dir_all(dir.path().join("files")).unwrap();
    symlink(outside.path(), dir.path().join("files")).unwrap();
    let err = read_site_files(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::NotRegularFile { path } if path.ends_with("files")),
        "{err:?}"
    );
}

#[test]
fn special_files_are_refused() {
    let dir = valid_site();
    let _listener = UnixListener::bind(dir.path().join("files/sock")).unwrap();
    let err = read_site_files(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::NotRegularFile { path } if path.ends_with("files/sock")),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("symbolic link or special file"),
        "{err}"
    );
}

#[test]
fn non_utf8_content_is_refused() {
    let dir = valid_site();
    write(dir.path(), "files/blob.bin", &[0xff, 0xfe, 0x00]);
    let err = read_site_files(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::NotUtf8 { path } if path.ends_with("files/blob.bin")),
        "{err:?}"
    );
}

#[test]
fn oversize_file_is_refused() {
    let dir = valid_site();
    let big = fs::File::create(dir.path().join("files/big")).unwrap();
    big.set_len(MAX_FILE_BYTES + 1).unwrap();
    let err = read_site_files(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::TooLarge { path, .. } if path.ends_with("files/big")),
        "{err:?}"
    );
}

#[test]
fn vault_file_loads_and_reports_errors_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault-data.yaml");
    fs::write(
        &path,
        "secret/platform:\n  k8s_users: { emo: { role: power-user } }\n",
    )
    .unwrap();
    let data = load_vault_file(&path).unwrap();
    assert_eq!(
        data.paths["secret/platform"].data["k8s_users"]["emo"]["role"],
        "power-user"
    );

    fs::write(&path, "secret/platform: [x]\n").unwrap();
    match load_vault_file(&path) {
        Err(LoadError::Site(errors)) => {
            let text = errors.to_string();
            assert!(
                text.starts_with(&format!("{}:1: secret/platform: ", path.display())),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    let err = load_vault_file(&dir.path().join("missing.yaml")).unwrap_err();
    assert!(matches!(err, LoadError::Io { .. }), "{err:?}");
}
