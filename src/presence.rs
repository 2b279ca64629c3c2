//! Who is online: the roster of connected sockets and their nicknames, as plain state.
//!
//! Owns nothing but the map; the socket layer feeds it joins, renames and leaves and sends
//! the snapshots. Presence is ephemeral: never stored, lost on restart by design.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// Most names listed in a snapshot; `count` is always exact.
pub const MAX_LISTED: usize = 200;

/// What `presence` tells every client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Connected clients, anonymous ones included.
    pub count: usize,
    /// Distinct nicknames of connected clients, sorted (at most [`MAX_LISTED`]).
    pub users: Vec<String>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Roster {
    /// Socket id → nickname (`None`: anonymous, e.g. a tutorial client).
    members: HashMap<String, Option<String>>,
    /// Nickname → how many sockets use it (a person with two tabs is listed once).
    names: BTreeMap<String, usize>,
    /// Changed since the last snapshot was taken.
    dirty: bool,
}

impl Roster {
    /// A socket connected.
    pub fn join(&mut self, sid: &str, nickname: Option<String>) {
        if let Some(name) = &nickname {
            *self.names.entry(name.clone()).or_default() += 1;
        }
        if let Some(Some(old)) = self.members.insert(sid.to_string(), nickname) {
            self.forget_name(&old);
        }
        self.dirty = true;
    }

    /// A socket left; returns its nickname.
    pub fn leave(&mut self, sid: &str) -> Option<String> {
        let nickname = self.members.remove(sid).flatten();
        if let Some(name) = &nickname {
            self.forget_name(name);
        }
        self.dirty = true;
        nickname
    }

    /// A socket changed its nickname; returns the previous one.
    pub fn rename(&mut self, sid: &str, nickname: String) -> Option<String> {
        *self.names.entry(nickname.clone()).or_default() += 1;
        let old = self
            .members
            .insert(sid.to_string(), Some(nickname))
            .flatten();
        if let Some(old) = &old {
            self.forget_name(old);
        }
        self.dirty = true;
        old
    }

    /// The socket's nickname, if it has one.
    pub fn nickname(&self, sid: &str) -> Option<&str> {
        self.members.get(sid).and_then(|n| n.as_deref())
    }

    fn forget_name(&mut self, name: &str) {
        if let Some(n) = self.names.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                self.names.remove(name);
            }
        }
    }

    /// The current snapshot if anything changed since the last call.
    pub fn take_changes(&mut self) -> Option<Snapshot> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        Some(self.snapshot())
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            count: self.members.len(),
            users: self.names.keys().take(MAX_LISTED).cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_people_not_tabs() {
        let mut roster = Roster::default();
        roster.join("a", Some("ada".into()));
        roster.join("b", Some("ada".into()));
        roster.join("c", None);
        assert_eq!(
            roster.take_changes(),
            Some(Snapshot {
                count: 3,
                users: vec!["ada".into()]
            })
        );
        assert_eq!(roster.take_changes(), None);
        assert_eq!(roster.rename("c", "bo".into()), None);
        assert_eq!(roster.leave("a"), Some("ada".into()));
        assert_eq!(roster.snapshot().users, vec!["ada", "bo"]);
        assert_eq!(roster.rename("b", "cy".into()), Some("ada".into()));
        assert_eq!(roster.snapshot().users, vec!["bo", "cy"]);
        assert_eq!(roster.nickname("b"), Some("cy"));
        assert_eq!(roster.leave("zzz"), None);
        assert_eq!(roster.snapshot().count, 2);
    }
}
