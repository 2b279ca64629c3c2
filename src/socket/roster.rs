//! Who is online: the roster of connected sockets and their nicknames, as plain state.
//!
//! Owns nothing but the maps; the socket layer feeds it joins, renames and leaves and sends
//! the snapshots. Presence is ephemeral: never stored, lost on restart by design.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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
    /// Nicknames that came online since the previous snapshot (their first connection),
    /// sorted, at most [`MAX_LISTED`]; `joinedCount` says how many in all.
    pub joined: Vec<String>,
    /// How many nicknames came online.
    #[serde(rename = "joinedCount")]
    pub joined_count: usize,
    /// Nicknames that went offline since the previous snapshot (their last connection),
    /// sorted, at most [`MAX_LISTED`]; `leftCount` says how many in all.
    pub left: Vec<String>,
    /// How many nicknames went offline.
    #[serde(rename = "leftCount")]
    pub left_count: usize,
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
    /// Names that came online since the last snapshot was taken.
    joined: BTreeSet<String>,
    /// Names that went offline since the last snapshot was taken.
    left: BTreeSet<String>,
}

impl Roster {
    /// A socket connected.
    pub fn join(&mut self, sid: &str, nickname: Option<String>) {
        if let Some(name) = &nickname {
            let sockets = self.names.entry(name.clone()).or_default();
            *sockets += 1;
            // A name back before anyone was told it left is no news either way.
            if *sockets == 1 && !self.left.remove(name) {
                self.joined.insert(name.clone());
            }
        }
        if let Some(Some(old)) = self.members.insert(sid.to_string(), nickname) {
            self.forget_name(&old);
        }
        self.dirty = true;
    }

    /// A socket left; returns its nickname.
    pub fn leave(&mut self, sid: &str) -> Option<String> {
        let nickname = self.members.remove(sid).flatten();
        if let Some(name) = &nickname
            && self.forget_name(name)
            && !self.joined.remove(name)
        {
            self.left.insert(name.clone());
        }
        self.dirty = true;
        nickname
    }

    /// A socket changed its nickname; returns the previous one.
    ///
    /// An anonymous socket taking a name is a join (news in the next snapshot); a named one
    /// changing it is told at once by the caller (`user renamed`), so it is no news here.
    pub fn rename(&mut self, sid: &str, nickname: String) -> Option<String> {
        let sockets = self.names.entry(nickname.clone()).or_default();
        *sockets += 1;
        let first = *sockets == 1;
        let old = self
            .members
            .insert(sid.to_string(), Some(nickname.clone()))
            .flatten();
        match &old {
            Some(old) => {
                self.forget_name(old);
            }
            None if first && !self.left.remove(&nickname) => {
                self.joined.insert(nickname);
            }
            None => {}
        }
        self.dirty = true;
        old
    }

    /// The socket's nickname, if it has one.
    pub fn nickname(&self, sid: &str) -> Option<&str> {
        self.members.get(sid).and_then(|n| n.as_deref())
    }

    /// One socket fewer uses `name`; returns whether that was its last.
    fn forget_name(&mut self, name: &str) -> bool {
        let Some(n) = self.names.get_mut(name) else {
            return false;
        };
        *n -= 1;
        if *n > 0 {
            return false;
        }
        self.names.remove(name);
        true
    }

    /// The snapshot with the names that came and went since the last call, if anything
    /// changed since then.
    pub fn take_changes(&mut self) -> Option<Snapshot> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let joined = std::mem::take(&mut self.joined);
        let left = std::mem::take(&mut self.left);
        Some(Snapshot {
            joined_count: joined.len(),
            joined: joined.into_iter().take(MAX_LISTED).collect(),
            left_count: left.len(),
            left: left.into_iter().take(MAX_LISTED).collect(),
            ..self.snapshot()
        })
    }

    /// Who is online now (no joined/left news: for a client that just connected).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            count: self.members.len(),
            users: self.names.keys().take(MAX_LISTED).cloned().collect(),
            joined: Vec::new(),
            joined_count: 0,
            left: Vec::new(),
            left_count: 0,
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
                users: vec!["ada".into()],
                joined: vec!["ada".into()],
                joined_count: 1,
                left: vec![],
                left_count: 0,
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

    #[test]
    fn joins_and_leaves_are_news_once_per_person_and_cancel_within_a_snapshot() {
        let mut roster = Roster::default();
        roster.join("a1", Some("ada".into()));
        roster.join("a2", Some("ada".into()));
        roster.join("b", Some("bo".into()));
        let first = roster.take_changes().expect("changed");
        assert_eq!(first.joined, vec!["ada", "bo"]);
        // A second tab closing is not news; the last one is.
        roster.leave("a1");
        assert_eq!(roster.take_changes().map(|s| s.left), Some(vec![]));
        roster.leave("a2");
        // Bo reconnects within one snapshot (a page reload): neither left nor joined.
        roster.leave("b");
        roster.join("b2", Some("bo".into()));
        let news = roster.take_changes().expect("changed");
        assert_eq!((news.joined, news.left), (vec![], vec!["ada".to_string()]));
        assert_eq!(news.users, vec!["bo"]);
        // Came and went within one snapshot: nothing to tell.
        roster.join("c", Some("cy".into()));
        roster.leave("c");
        let news = roster.take_changes().expect("changed");
        assert_eq!((news.joined_count, news.left_count), (0, 0));
    }

    #[test]
    fn news_lists_are_bounded_but_counted() {
        let mut roster = Roster::default();
        for n in 0..(MAX_LISTED + 50) {
            roster.join(&format!("s{n}"), Some(format!("user{n:04}")));
        }
        let news = roster.take_changes().expect("changed");
        assert_eq!(news.joined.len(), MAX_LISTED);
        assert_eq!(news.joined_count, MAX_LISTED + 50);
        assert_eq!(news.count, MAX_LISTED + 50);
    }
}
