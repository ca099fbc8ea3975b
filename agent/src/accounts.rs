//! The root's account database, read from its own `etc/passwd` and `etc/group` through
//! [`Host`] (never NSS: under `--root` the host's accounts are not the root's).

use std::collections::HashMap;

use crate::host::{FileState, Host, HostError};

/// One `passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    /// Login name.
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// GECOS.
    pub comment: String,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// One `group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// gid.
    pub gid: u32,
    /// Supplementary members.
    pub members: Vec<String>,
}

/// Users and groups of a root, by name.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    users: HashMap<String, Passwd>,
    groups: HashMap<String, Group>,
}

impl Accounts {
    /// Reads `/etc/passwd` and `/etc/group` beneath the host's root; a missing file is empty.
    pub fn load(host: &Host) -> Result<Accounts, HostError> {
        let passwd = read(host, "/etc/passwd")?;
        let group = read(host, "/etc/group")?;
        Ok(Accounts::parse(&passwd, &group))
    }

    /// Parses the two files' text; malformed lines are ignored (as NSS does).
    pub fn parse(passwd: &str, group: &str) -> Accounts {
        let users = passwd
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() == 7).then_some(())?;
                Some(Passwd {
                    name: f[0].to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    comment: f[4].to_string(),
                    home: f[5].to_string(),
                    shell: f[6].to_string(),
                })
            })
            .map(|p| (p.name.clone(), p))
            .collect();
        let groups = group
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() == 4).then_some(())?;
                Some(Group {
                    name: f[0].to_string(),
                    gid: f[2].parse().ok()?,
                    members: f[3]
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect(),
                })
            })
            .map(|g| (g.name.clone(), g))
            .collect();
        Accounts { users, groups }
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<&Passwd> {
        self.users.get(name)
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }

    /// Names of the groups listing `user` as a supplementary member.
    pub fn supplementary_groups(&self, user: &str) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .groups
            .values()
            .filter(|g| g.members.iter().any(|m| m == user))
            .map(|g| g.name.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// The uid of `owner`: a user name, or a numeric id.
    pub fn uid(&self, owner: &str) -> Option<u32> {
        self.user(owner)
            .map(|u| u.uid)
            .or_else(|| owner.parse().ok())
    }

    /// The gid of `group`: a group name, or a numeric id.
    pub fn gid(&self, group: &str) -> Option<u32> {
        self.group(group)
            .map(|g| g.gid)
            .or_else(|| group.parse().ok())
    }
}

fn read(host: &Host, path: &str) -> Result<String, HostError> {
    Ok(match host.observe_file(path) {
        Ok(FileState::Regular(f)) => {
            String::from_utf8_lossy(&f.content.unwrap_or_default()).into_owned()
        }
        // Also a sandbox root without /etc (it observes as absent): no accounts (numeric owners
        // still resolve).
        Ok(_) => String::new(),
        Err(e) => return Err(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_group_and_resolves_names_and_numbers() {
        let a = Accounts::parse(
            "root:x:0:0:root:/root:/bin/bash\nemo:x:1001:1001:Emo:/home/emo:/bin/bash\nbroken:x\n",
            "root:x:0:\nemo:x:1001:\ndevs:x:2000:emo,ana\nops:x:2001:ana\n",
        );
        let emo = a.user("emo").unwrap();
        assert_eq!(
            (emo.uid, emo.gid, emo.home.as_str()),
            (1001, 1001, "/home/emo")
        );
        assert_eq!(a.user("broken"), None);
        assert_eq!(a.supplementary_groups("emo"), ["devs"]);
        assert_eq!(a.supplementary_groups("ana"), ["devs", "ops"]);
        assert_eq!(a.uid("emo"), Some(1001));
        assert_eq!(a.uid("4242"), Some(4242));
        assert_eq!(a.uid("nobody-here"), None);
        assert_eq!(a.gid("devs"), Some(2000));
    }
}
