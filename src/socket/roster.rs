//! Who is online: the roster of connected sockets and their nicknames, as plain state.
//!
//! Owns nothing but the maps; the socket layer feeds it joins, renames and leaves and sends
//! the snapshots. Presence is ephemeral: never stored, lost on restart by design.
//!
//! Costs: a join, a leave, a rename and the [`Roster::snapshot`] a newcomer gets do not grow
//! with the number of connections (the snapshot lists at most [`MAX_LISTED`] names, merged
//! from each node's sorted names, and its count is kept as members come and go); only
//! [`Roster::take_changes`], once per presence tick, walks every name. A roster is one
//! conversation's: rooms will hold one each.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

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

/// What one node of a cluster has online (the rest of the roster is local).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeRoster {
    /// Nickname → sockets using it on that node.
    pub names: BTreeMap<String, usize>,
    /// Sockets without a nickname on that node.
    pub anonymous: usize,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Roster {
    /// Socket id → nickname (`None`: anonymous, e.g. a tutorial client).
    members: HashMap<String, Option<String>>,
    /// Nickname → how many local sockets use it (a person with two tabs is listed once).
    names: BTreeMap<String, usize>,
    /// Local sockets without a nickname.
    anonymous: usize,
    /// Other nodes' rosters (cluster mode), with when each was last heard of.
    remote: HashMap<String, (NodeRoster, Instant)>,
    /// Sockets on the other nodes, as their rosters say (kept with `remote`).
    remote_count: usize,
    /// The names online as of the last [`Roster::take_changes`]: who came and went is the
    /// difference, so a name that leaves and comes back in between is no news.
    announced: BTreeSet<String>,
    /// Changed since the last snapshot was taken.
    dirty: bool,
}

impl Roster {
    /// A socket connected.
    pub fn join(&mut self, sid: &str, nickname: Option<String>) {
        match &nickname {
            Some(name) => *self.names.entry(name.clone()).or_default() += 1,
            None => self.anonymous += 1,
        }
        if let Some(old) = self.members.insert(sid.to_string(), nickname) {
            self.forget(old.as_deref());
        }
        self.dirty = true;
    }

    /// A socket left; returns its nickname.
    pub fn leave(&mut self, sid: &str) -> Option<String> {
        let member = self.members.remove(sid)?;
        self.forget(member.as_deref());
        self.dirty = true;
        member
    }

    /// A socket changed its nickname; returns the previous one.
    ///
    /// An anonymous socket taking a name is a join (news in the next snapshot); a named one
    /// changing it is told at once by the caller (`user renamed`), so it is no news here.
    pub fn rename(&mut self, sid: &str, nickname: String) -> Option<String> {
        *self.names.entry(nickname.clone()).or_default() += 1;
        let member = self.members.insert(sid.to_string(), Some(nickname.clone()));
        if let Some(member) = &member {
            self.forget(member.as_deref());
        }
        let old = member.flatten();
        if let Some(old) = &old {
            if !self.is_online(old) {
                self.announced.remove(old);
            }
            self.announced.insert(nickname);
        }
        self.dirty = true;
        old
    }

    /// The socket's nickname, if it has one.
    pub fn nickname(&self, sid: &str) -> Option<&str> {
        self.members.get(sid).and_then(|n| n.as_deref())
    }

    /// A member with this nickname (or none) is gone.
    fn forget(&mut self, nickname: Option<&str>) {
        let Some(name) = nickname else {
            self.anonymous = self.anonymous.saturating_sub(1);
            return;
        };
        if let Some(n) = self.names.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                self.names.remove(name);
            }
        }
    }

    fn is_online(&self, name: &str) -> bool {
        self.names.contains_key(name)
            || self
                .remote
                .values()
                .any(|(roster, _)| roster.names.contains_key(name))
    }

    /// This node's part of the roster, for the other nodes.
    pub fn local(&self) -> NodeRoster {
        NodeRoster {
            names: self.names.clone(),
            anonymous: self.anonymous,
        }
    }

    /// What another node has online, as it just said.
    pub fn set_remote(&mut self, node: &str, roster: NodeRoster, now: Instant) {
        let changed = self
            .remote
            .get(node)
            .is_none_or(|(known, _)| *known != roster);
        self.remote.insert(node.to_string(), (roster, now));
        if changed {
            self.count_remote();
        }
        self.dirty |= changed;
    }

    /// Forgets the nodes not heard of since `before` (they died, or lost NATS).
    pub fn expire_remote(&mut self, before: Instant) {
        let known = self.remote.len();
        self.remote.retain(|_, (_, seen)| *seen >= before);
        if self.remote.len() != known {
            self.count_remote();
            self.dirty = true;
        }
    }

    /// Recounts the other nodes' sockets (once per heartbeat that changed something).
    fn count_remote(&mut self) {
        self.remote_count = self
            .remote
            .values()
            .map(|(roster, _)| roster.anonymous + roster.names.values().sum::<usize>())
            .sum();
    }

    /// Every name online, on this node and the others.
    fn online(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.names.keys().cloned().collect();
        for (roster, _) in self.remote.values() {
            names.extend(roster.names.keys().cloned());
        }
        names
    }

    /// The snapshot with the names that came and went since the last call, if anything
    /// changed since then.
    pub fn take_changes(&mut self) -> Option<Snapshot> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let online = self.online();
        let joined: Vec<String> = online.difference(&self.announced).cloned().collect();
        let left: Vec<String> = self.announced.difference(&online).cloned().collect();
        let snapshot = Snapshot {
            joined_count: joined.len(),
            joined: joined.into_iter().take(MAX_LISTED).collect(),
            left_count: left.len(),
            left: left.into_iter().take(MAX_LISTED).collect(),
            ..self.snapshot()
        };
        self.announced = online;
        Some(snapshot)
    }

    /// Who is online now (no joined/left news: for a client that just connected). Its cost
    /// does not grow with the connections: the first [`MAX_LISTED`] names of each node's
    /// sorted names, merged, and counts kept as members come and go.
    pub fn snapshot(&self) -> Snapshot {
        let mut users: BTreeSet<&str> = self
            .names
            .keys()
            .take(MAX_LISTED)
            .map(String::as_str)
            .collect();
        for (roster, _) in self.remote.values() {
            users.extend(roster.names.keys().take(MAX_LISTED).map(String::as_str));
        }
        Snapshot {
            count: self.members.len() + self.remote_count,
            users: users
                .into_iter()
                .take(MAX_LISTED)
                .map(String::from)
                .collect(),
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
        assert_eq!(roster.local().anonymous, 0, "c took a name");
        roster.join("d", None);
        roster.join("d", Some("di".into()));
        assert_eq!(roster.local().anonymous, 0, "d joined again with a name");
        roster.join("e", None);
        assert_eq!(roster.local().anonymous, 1);
        assert_eq!(roster.leave("e"), None);
        assert_eq!(roster.local().anonymous, 0);
    }

    #[test]
    fn a_snapshot_lists_the_first_names_of_every_node_merged() {
        let mut roster = Roster::default();
        for n in 0..(MAX_LISTED + 10) {
            roster.join(&format!("s{n}"), Some(format!("user{:04}", 2 * n)));
        }
        let odd = NodeRoster {
            names: (0..MAX_LISTED + 10)
                .map(|n| (format!("user{:04}", 2 * n + 1), 1))
                .collect(),
            anonymous: 5,
        };
        roster.set_remote("node-b", odd, Instant::now());
        let snapshot = roster.snapshot();
        let expected: Vec<String> = (0..MAX_LISTED).map(|n| format!("user{n:04}")).collect();
        assert_eq!(snapshot.users, expected);
        assert_eq!(snapshot.count, 2 * (MAX_LISTED + 10) + 5);
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

    #[test]
    fn other_nodes_count_and_drop_out_when_not_heard_of() {
        let mut roster = Roster::default();
        let t0 = Instant::now();
        roster.join("a", Some("ada".into()));
        roster.take_changes();
        let bo_elsewhere = NodeRoster {
            names: [("bo".to_string(), 2), ("ada".to_string(), 1)].into(),
            anonymous: 1,
        };
        roster.set_remote("node-b", bo_elsewhere.clone(), t0);
        let news = roster.take_changes().expect("changed");
        assert_eq!(news.count, 5, "1 here, 4 there");
        assert_eq!(news.users, vec!["ada", "bo"]);
        assert_eq!(news.joined, vec!["bo"], "ada was already online here");
        // Heard of again with nothing new: no news.
        roster.set_remote(
            "node-b",
            bo_elsewhere,
            t0 + std::time::Duration::from_secs(1),
        );
        assert_eq!(roster.take_changes(), None);
        // Not heard of since: it drops out, and bo with it.
        roster.expire_remote(t0 + std::time::Duration::from_secs(2));
        let news = roster.take_changes().expect("changed");
        assert_eq!((news.count, news.left), (1, vec!["bo".to_string()]));
        assert_eq!(roster.local().names.get("ada"), Some(&1));
    }
}
