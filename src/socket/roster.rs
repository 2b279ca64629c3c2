//! Who is online, room by room: each room's roster of connected sockets and their nicknames
//! ([`Roster`]), and every room's together ([`Rosters`]), as plain state.
//!
//! Owns nothing but the maps; the socket layer feeds it joins, renames and leaves and sends
//! the snapshots. Presence is ephemeral: never stored, lost on restart by design.
//!
//! Costs: a join, a leave, a rename and the [`Roster::snapshot`] a newcomer gets do not grow
//! with the number of connections (the snapshot lists at most [`MAX_LISTED`] names, merged
//! from each node's sorted names, and its count is kept as members come and go); only
//! [`Roster::take_changes`], once per presence tick, walks every name. A room has one roster
//! while anyone is in it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use serde::Serialize;

use crate::delivery::RoomKey;
use crate::metrics;

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
    #[cfg(test)]
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

    /// Whether nobody is in the room, here or on another node.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.remote.is_empty()
    }

    /// Sockets in the room on this node.
    pub fn local_count(&self) -> usize {
        self.members.len()
    }

    /// Sockets in the room on every node.
    pub fn count(&self) -> usize {
        self.members.len() + self.remote_count
    }

    /// Forgets another node's part (it no longer has anyone in the room).
    pub fn forget_remote(&mut self, node: &str) {
        if self.remote.remove(node).is_some() {
            self.count_remote();
            self.dirty = true;
        }
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

/// Every room's roster, and each local socket's nickname and rooms: what presence is made
/// of. A room's roster exists while someone (here or on another node) is in it.
#[derive(Debug, Default)]
pub struct Rosters {
    rooms: HashMap<RoomKey, Roster>,
    /// The names of the rooms in `rooms` but the default room, in order (for the directory).
    ordered: BTreeSet<String>,
    /// Rooms whose roster changed since their last snapshot was taken.
    dirty: BTreeSet<RoomKey>,
    /// Each local socket's nickname.
    names: HashMap<String, Option<String>>,
    /// Local sockets' memberships: one per socket per room.
    memberships: usize,
}

impl Rosters {
    fn roster(&mut self, room: &RoomKey) -> &mut Roster {
        if !self.rooms.contains_key(room) {
            self.rooms.insert(room.clone(), Roster::default());
            if let Some(name) = room {
                self.ordered.insert(name.clone());
            }
        }
        self.dirty.insert(room.clone());
        self.rooms.entry(room.clone()).or_default()
    }

    /// A socket connected with `nickname`, in `rooms`.
    pub fn connect(&mut self, sid: &str, nickname: Option<String>, rooms: &[RoomKey]) {
        for room in rooms {
            self.join(sid, nickname.clone(), room);
        }
        self.names.insert(sid.to_string(), nickname);
    }

    /// A socket joined `room`; returns false, listing nothing, if it has disconnected (its
    /// join was still being saved when it did).
    pub fn enter(&mut self, sid: &str, room: &RoomKey) -> bool {
        let Some(nickname) = self.names.get(sid).cloned() else {
            return false;
        };
        self.join(sid, nickname, room);
        true
    }

    fn join(&mut self, sid: &str, nickname: Option<String>, room: &RoomKey) {
        let roster = self.roster(room);
        let before = roster.members.len();
        roster.join(sid, nickname);
        let added = roster.members.len() - before;
        self.count_memberships(added, 0);
    }

    /// A socket left `room`; returns its nickname.
    pub fn exit(&mut self, sid: &str, room: &RoomKey) -> Option<String> {
        // A room left empty is forgotten after its last snapshot (`take_changes`).
        let roster = self.roster(room);
        let before = roster.members.len();
        let nickname = roster.leave(sid);
        let removed = before - roster.members.len();
        self.count_memberships(0, removed);
        nickname
    }

    fn count_memberships(&mut self, added: usize, removed: usize) {
        if added != removed {
            self.memberships = (self.memberships + added).saturating_sub(removed);
            metrics::gauge(metrics::ROOM_MEMBERSHIPS).set(self.memberships as f64);
        }
    }

    /// Local sockets' memberships: one per socket per room it is in.
    #[cfg(test)]
    pub fn memberships(&self) -> usize {
        self.memberships
    }

    /// A socket disconnected from `rooms`; returns its nickname.
    pub fn disconnect(&mut self, sid: &str, rooms: &[RoomKey]) -> Option<String> {
        for room in rooms {
            self.exit(sid, room);
        }
        self.names.remove(sid).flatten()
    }

    /// A socket in `rooms` changed its nickname; returns the previous one.
    pub fn rename(&mut self, sid: &str, nickname: String, rooms: &[RoomKey]) -> Option<String> {
        for room in rooms {
            self.roster(room).rename(sid, nickname.clone());
        }
        self.names.insert(sid.to_string(), Some(nickname)).flatten()
    }

    /// A socket's nickname, if it has one.
    pub fn nickname(&self, sid: &str) -> Option<&str> {
        self.names.get(sid).and_then(|n| n.as_deref())
    }

    /// Who is in `room` now (for a socket that just joined it).
    pub fn snapshot(&self, room: &RoomKey) -> Snapshot {
        self.rooms
            .get(room)
            .map(Roster::snapshot)
            .unwrap_or_else(|| Roster::default().snapshot())
    }

    /// Sockets in `room`, on every node.
    pub fn count(&self, room: &RoomKey) -> usize {
        self.rooms.get(room).map_or(0, Roster::count)
    }

    /// Rooms with anyone in them, on any node.
    pub fn rooms(&self) -> impl Iterator<Item = &RoomKey> {
        self.rooms
            .iter()
            .filter(|(_, roster)| roster.count() > 0)
            .map(|(room, _)| room)
    }

    /// How many rooms have a roster: those with anyone in them, and those just left empty
    /// (forgotten at their last snapshot), so at least as many as [`Rosters::rooms`] lists.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Up to `limit` names of rooms with anyone in them, the default room apart, in order
    /// after `after`.
    pub fn names_after(&self, after: &str, limit: usize) -> Vec<String> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.ordered
            .range::<str, _>((Excluded(after), Unbounded))
            .filter(|name| self.count(&Some((*name).clone())) > 0)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The rooms whose roster changed, with their snapshot and news; rooms nobody is in any
    /// more are forgotten after their last snapshot.
    pub fn take_changes(&mut self) -> Vec<(RoomKey, Snapshot)> {
        let mut changes = Vec::new();
        for room in std::mem::take(&mut self.dirty) {
            let Some(roster) = self.rooms.get_mut(&room) else {
                continue;
            };
            if let Some(snapshot) = roster.take_changes() {
                changes.push((room.clone(), snapshot));
            }
            if roster.is_empty() {
                self.rooms.remove(&room);
                if let Some(name) = &room {
                    self.ordered.remove(name);
                }
            }
        }
        changes
    }

    /// This node's part of every room's roster, for the other nodes (keyed by room name; the
    /// default room is `""`).
    pub fn local(&self) -> BTreeMap<String, NodeRoster> {
        self.rooms
            .iter()
            .filter(|(_, roster)| roster.local_count() > 0)
            .map(|(room, roster)| (room.clone().unwrap_or_default(), roster.local()))
            .collect()
    }

    /// What another node has online, room by room, as it just said: rooms it no longer
    /// lists lose its part.
    pub fn set_remote(&mut self, node: &str, rooms: BTreeMap<String, NodeRoster>, now: Instant) {
        let listed: BTreeSet<RoomKey> = rooms
            .keys()
            .map(|key| (!key.is_empty()).then(|| key.clone()))
            .collect();
        let stale: Vec<RoomKey> = self
            .rooms
            .iter()
            .filter(|(room, roster)| !listed.contains(*room) && roster.remote.contains_key(node))
            .map(|(room, _)| room.clone())
            .collect();
        for room in stale {
            self.roster(&room).forget_remote(node);
        }
        for (key, roster) in rooms {
            let room = (!key.is_empty()).then_some(key);
            let changed = self
                .rooms
                .get(&room)
                .is_none_or(|known| known.remote.get(node).is_none_or(|(r, _)| *r != roster));
            if changed {
                self.roster(&room).set_remote(node, roster, now);
            } else if let Some(known) = self.rooms.get_mut(&room) {
                known.set_remote(node, roster, now);
            }
        }
    }

    /// Forgets the nodes not heard of since `before` (they died, or lost NATS).
    pub fn expire_remote(&mut self, before: Instant) {
        let mut expired = Vec::new();
        for (room, roster) in &mut self.rooms {
            let known = roster.remote.len();
            roster.expire_remote(before);
            if roster.remote.len() != known {
                expired.push(room.clone());
            }
        }
        self.dirty.extend(expired);
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

    #[test]
    fn each_room_has_its_own_roster() {
        let dev = Some("dev".to_string());
        let mut rosters = Rosters::default();
        rosters.connect("a", Some("ada".into()), &[None, dev.clone()]);
        rosters.connect("b", Some("bo".into()), std::slice::from_ref(&dev));
        rosters.connect("c", None, &[None]);
        assert_eq!(rosters.memberships(), 4);
        assert!(rosters.enter("b", &dev));
        assert_eq!(rosters.memberships(), 4, "in dev already");
        assert!(
            !rosters.enter("gone", &dev),
            "a socket that is not connected"
        );
        assert_eq!(rosters.memberships(), 4);
        let changes = rosters.take_changes();
        let counts: Vec<(RoomKey, usize)> = changes
            .iter()
            .map(|(room, s)| (room.clone(), s.count))
            .collect();
        assert_eq!(counts, [(None, 2), (dev.clone(), 2)]);
        assert_eq!(rosters.snapshot(&dev).users, ["ada", "bo"]);
        assert!(rosters.take_changes().is_empty(), "nothing new");
        // A rename reaches every room of the socket; leaving one room is news there only.
        assert_eq!(
            rosters.rename("a", "al".into(), &[None, dev.clone()]),
            Some("ada".into())
        );
        rosters.exit("b", &dev);
        rosters.exit("b", &dev);
        assert_eq!(rosters.memberships(), 3, "b left dev once");
        let changes = rosters.take_changes();
        assert_eq!(changes.len(), 2);
        assert_eq!(rosters.snapshot(&dev).users, ["al"]);
        // The last one out: its room's last snapshot, then it is forgotten.
        assert_eq!(
            rosters.disconnect("a", &[None, dev.clone()]),
            Some("al".into())
        );
        let changes = rosters.take_changes();
        let left: Vec<usize> = changes.iter().map(|(_, s)| s.count).collect();
        assert_eq!(left, [1, 0]);
        assert_eq!(rosters.memberships(), 1, "c, in the default room");
        let rooms: Vec<&RoomKey> = rosters.rooms().collect();
        assert_eq!(rooms, [&None], "dev is forgotten");
        // Other nodes, room by room.
        let now = Instant::now();
        let mut theirs = BTreeMap::new();
        theirs.insert(
            "dev".to_string(),
            NodeRoster {
                names: [("cy".to_string(), 1)].into(),
                anonymous: 2,
            },
        );
        rosters.set_remote("node-b", theirs, now);
        assert_eq!(rosters.count(&dev), 3);
        rosters.set_remote("node-b", BTreeMap::new(), now);
        assert_eq!(rosters.count(&dev), 0, "no longer listed: gone");
        assert_eq!(
            rosters.local().len(),
            1,
            "only the default room has someone here"
        );
    }
}
