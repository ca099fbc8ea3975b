//! The groups that make an account root-equivalent (or close to it) on Debian: the one list the
//! compiler and the agent both check (THREATS S5: a roster line alone never grants root).
//!
//! How the list was chosen: every group whose membership, on a stock Debian 12/13 with the
//! packages a workstation commonly carries, lets a member become root, read every secret on the
//! host, or write what root executes:
//!
//! - administration by design: `root` (gid 0 owns much of `/etc`), `sudo`, `wheel`, `admin`
//!   (sudoers on Debian/Ubuntu and others);
//! - container and VM managers whose socket is root: `docker`, `podman` (when a rootful socket
//!   is group-owned), `lxd`, `incus-admin`, `incus`, `libvirt`, `libvirt-qemu`, `kvm`;
//! - raw devices and secrets: `disk` (raw block devices: read `/etc/shadow` off the disk, write
//!   anything), `shadow` (reads password hashes), `ssl-cert` (reads TLS private keys), `tty`
//!   and `input` (other people's terminals and keyboards), `video` (framebuffers: screen
//!   contents);
//! - what root runs or reads: `staff` (writes `/usr/local`, which is early in root's `PATH`),
//!   `src` (writes `/usr/src`), `crontab` (creates crontabs in `/var/spool/cron/crontabs`),
//!   `adm` and `systemd-journal` (every log, where tokens and passwords end up), `utmp`
//!   (forges login records), `mail` (everyone's mail spool).
//!
//! A tier grants any of these only in `privileged_groups`, on purpose; the agent refuses one in a
//! user's ordinary `groups` and reports held ones beyond the grant as drift.

/// Root-equivalent and secret-reading groups, sorted.
pub const PRIVILEGED_GROUPS: &[&str] = &[
    "adm",
    "admin",
    "crontab",
    "disk",
    "docker",
    "incus",
    "incus-admin",
    "input",
    "kvm",
    "libvirt",
    "libvirt-qemu",
    "lxd",
    "mail",
    "podman",
    "root",
    "shadow",
    "src",
    "ssl-cert",
    "staff",
    "sudo",
    "systemd-journal",
    "tty",
    "utmp",
    "video",
    "wheel",
];

/// Whether `group` is in [`PRIVILEGED_GROUPS`].
pub fn is_privileged(group: &str) -> bool {
    PRIVILEGED_GROUPS.binary_search(&group).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_and_unique_so_lookups_are_exact() {
        assert!(PRIVILEGED_GROUPS.windows(2).all(|w| w[0] < w[1]));
        for g in PRIVILEGED_GROUPS {
            assert!(is_privileged(g), "{g}");
        }
        for g in ["code-shared", "users", "plugdev", "sudoers", ""] {
            assert!(!is_privileged(g), "{g}");
        }
    }
}
