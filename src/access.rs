//! Who may do what in a room: the access model as plain data and rules, and the room events
//! that change it.
//!
//! A room is public (anyone may join and post) or private (members only), and may be
//! read-only (only moderators post). Each user has at most one role per room (owner,
//! moderator, member) and may be banned (cannot join or post) or muted (cannot post). Server
//! admins (`--server-admin`) act as owners everywhere.
//!
//! Every change is a [`RoomEvent`]: an entry of the ordered log, stored as a row like a
//! message (in a cluster, published to the room's subject of the stream), so every node
//! applies the same changes in the same order ([`RoomAccess::apply`]) and enforces the same
//! state; a client that was offline replays them like messages. The rules ([`RoomAccess::may_join`]
//! and the others) are checked by the node that takes a request, against its replica's state;
//! applying is unconditional, so two nodes never disagree about what a change did.
//!
//! A leaf module: it depends on nothing else in the crate and does no I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// A user's role in a room, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// May join a private room and post (unless the room is read-only).
    Member,
    /// May post in a read-only room, invite, kick, ban, mute and delete others' messages.
    Moderator,
    /// The room's creator: a moderator who also sets roles.
    Owner,
}

impl Role {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Moderator => "moderator",
            Role::Owner => "owner",
        }
    }

    /// The role `set role` may give: `moderator` or `member`.
    pub fn settable(name: &str) -> Option<Role> {
        match name {
            "moderator" => Some(Role::Moderator),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// One change to a room's access, or a message's deletion: an entry of the ordered log.
/// Stored in the record of its row (format version 5); the order of the variants is part of
/// the format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoomEvent {
    /// `create room`: the author of the entry owns the room.
    Created {
        /// Members only.
        private: bool,
        /// Only moderators post.
        read_only: bool,
    },
    /// `set role`.
    RoleSet {
        /// Whose role.
        user: String,
        /// The new role.
        role: Role,
    },
    /// `invite`: `user` becomes a member.
    Invited {
        /// Who.
        user: String,
    },
    /// `kick`: every socket of `user` leaves the room (and a private room's member is a
    /// member no more).
    Kicked {
        /// Who.
        user: String,
    },
    /// `ban`: a kick, and `user` cannot join or post until unbanned.
    Banned {
        /// Who.
        user: String,
    },
    /// `unban`.
    Unbanned {
        /// Who.
        user: String,
    },
    /// `mute`: `user` cannot post.
    Muted {
        /// Who.
        user: String,
    },
    /// `unmute`.
    Unmuted {
        /// Who.
        user: String,
    },
    /// `delete message`: message `id` of the room is erased; its row becomes a tombstone.
    Deleted {
        /// The deleted message's id.
        id: u64,
        /// Its dedup key, for the tombstone (a replica rebuilt from a stream that no longer
        /// holds the message writes the tombstone from this).
        dedup: Option<[u8; 16]>,
    },
    /// Not an entry of the log: what a deleted message's row holds instead of it. It keeps
    /// the id (the row) and the dedup key, so a retry of the deleted message is answered as
    /// a duplicate and never stored again.
    Erased {
        /// The deleted message's dedup key.
        dedup: Option<[u8; 16]>,
    },
}

impl RoomEvent {
    /// The `action` of its `room changed` notice (`None` for a deletion or a tombstone).
    pub fn action(&self) -> Option<&'static str> {
        Some(match self {
            RoomEvent::Created { .. } => "create",
            RoomEvent::RoleSet { .. } => "role",
            RoomEvent::Invited { .. } => "invite",
            RoomEvent::Kicked { .. } => "kick",
            RoomEvent::Banned { .. } => "ban",
            RoomEvent::Unbanned { .. } => "unban",
            RoomEvent::Muted { .. } => "mute",
            RoomEvent::Unmuted { .. } => "unmute",
            RoomEvent::Deleted { .. } | RoomEvent::Erased { .. } => return None,
        })
    }

    /// The user it is about, if any.
    pub fn target(&self) -> Option<&str> {
        match self {
            RoomEvent::RoleSet { user, .. }
            | RoomEvent::Invited { user }
            | RoomEvent::Kicked { user }
            | RoomEvent::Banned { user }
            | RoomEvent::Unbanned { user }
            | RoomEvent::Muted { user }
            | RoomEvent::Unmuted { user } => Some(user),
            _ => None,
        }
    }

    /// Whether the user it names leaves the room now (a kick or a ban).
    pub fn removes_user(&self) -> bool {
        matches!(self, RoomEvent::Kicked { .. } | RoomEvent::Banned { .. })
    }
}

/// One user's standing in one room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// Their role, if any.
    pub role: Option<Role>,
    /// Cannot join or post.
    pub banned: bool,
    /// Cannot post.
    pub muted: bool,
}

impl Standing {
    fn is_default(&self) -> bool {
        *self == Standing::default()
    }
}

/// One room's access state. A room without one (every room joined into existence, the
/// default room) is public with no owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomAccess {
    /// Members only.
    pub private: bool,
    /// Only moderators post.
    pub read_only: bool,
    /// The id of the entry that created it (0: joined into existence).
    pub created: u64,
    /// The users with a role or a ban or a mute, by user id.
    pub users: BTreeMap<String, Standing>,
}

/// Why a request is refused; the text is the ack's `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The actor's role does not allow it.
    #[error("not allowed")]
    NotAllowed,
    /// Access rules are off (`--auth off`): there are no identities to moderate.
    #[error("not allowed: moderation needs --auth optional or required")]
    NoIdentities,
    /// The actor is anonymous.
    #[error("not allowed: sign in first")]
    Anonymous,
    /// The actor is banned from the room.
    #[error("banned from this room")]
    Banned,
    /// The actor is muted in the room.
    #[error("muted in this room")]
    Muted,
    /// Only moderators post in the room.
    #[error("read-only room: only moderators post")]
    ReadOnly,
}

/// How much an actor may do in a room, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Nobody,
    Member,
    Moderator,
    Owner,
    Admin,
}

impl RoomAccess {
    /// `user`'s standing (the default when it has none).
    pub fn standing(&self, user: &str) -> Standing {
        self.users.get(user).copied().unwrap_or_default()
    }

    fn rank_of_user(&self, user: &str, admins: &Admins) -> Rank {
        if admins.contains(user) {
            return Rank::Admin;
        }
        match self.standing(user).role {
            Some(Role::Owner) => Rank::Owner,
            Some(Role::Moderator) => Rank::Moderator,
            Some(Role::Member) => Rank::Member,
            None => Rank::Nobody,
        }
    }

    fn rank(&self, actor: Option<&str>, admins: &Admins) -> Rank {
        actor.map_or(Rank::Nobody, |user| self.rank_of_user(user, admins))
    }

    /// Whether `actor` may join (or be in) the room.
    pub fn may_join(&self, actor: Option<&str>, admins: &Admins) -> Result<(), Denied> {
        let rank = self.rank(actor, admins);
        if rank < Rank::Admin && actor.is_some_and(|user| self.standing(user).banned) {
            return Err(Denied::Banned);
        }
        if self.private && rank < Rank::Member {
            return Err(Denied::NotAllowed);
        }
        Ok(())
    }

    /// Whether `actor`, a member of the room's sockets, may post in it.
    pub fn may_post(&self, actor: Option<&str>, admins: &Admins) -> Result<(), Denied> {
        self.may_join(actor, admins)?;
        let rank = self.rank(actor, admins);
        if rank < Rank::Admin && actor.is_some_and(|user| self.standing(user).muted) {
            return Err(Denied::Muted);
        }
        if self.read_only && rank < Rank::Moderator {
            return Err(Denied::ReadOnly);
        }
        Ok(())
    }

    /// Whether `actor` may make `event` (anything but a creation or a deletion, which have
    /// rules of their own) about its target.
    pub fn may_change(
        &self,
        actor: Option<&str>,
        event: &RoomEvent,
        admins: &Admins,
    ) -> Result<(), Denied> {
        if actor.is_none() {
            return Err(Denied::Anonymous);
        }
        let rank = self.rank(actor, admins);
        let needed = match event {
            RoomEvent::RoleSet { .. } => Rank::Owner,
            _ => Rank::Moderator,
        };
        if rank < needed {
            return Err(Denied::NotAllowed);
        }
        // Nobody acts on someone of their own rank or above (a moderator cannot ban another
        // moderator, nobody can demote the owner but an admin).
        if let Some(target) = event.target()
            && self.rank_of_user(target, admins) >= rank
        {
            return Err(Denied::NotAllowed);
        }
        Ok(())
    }

    /// Whether `actor` may delete a message of the room that `author` (its verified sender,
    /// if any) sent: its author, or a moderator.
    pub fn may_delete(
        &self,
        actor: Option<&str>,
        author: Option<&str>,
        admins: &Admins,
    ) -> Result<(), Denied> {
        let Some(user) = actor else {
            return Err(Denied::Anonymous);
        };
        if author == Some(user) || self.rank(actor, admins) >= Rank::Moderator {
            Ok(())
        } else {
            Err(Denied::NotAllowed)
        }
    }

    /// Applies the entry `id`, made by `by`: what every node does with it, in log order.
    /// Unconditional (the rules were checked where it was taken) and deterministic; returns
    /// whether the state changed. A creation of a room that already has an owner or state
    /// changes nothing (the first creation in the log wins).
    pub fn apply(&mut self, id: u64, by: Option<&str>, event: &RoomEvent) -> bool {
        let before = self.clone();
        match event {
            RoomEvent::Created { private, read_only } => {
                if self.created != 0 || !self.users.is_empty() {
                    return false;
                }
                self.private = *private;
                self.read_only = *read_only;
                self.created = id;
                if let Some(by) = by {
                    self.edit(by, |s| s.role = Some(Role::Owner));
                }
            }
            RoomEvent::RoleSet { user, role } => {
                // `set role` never makes an owner: a room has one, its creator.
                let role = if *role == Role::Owner {
                    Role::Moderator
                } else {
                    *role
                };
                self.edit(user, |s| {
                    if s.role != Some(Role::Owner) {
                        s.role = Some(role);
                    }
                });
            }
            RoomEvent::Invited { user } => self.edit(user, |s| {
                s.role.get_or_insert(Role::Member);
            }),
            // Out of a private room, a member is a member no more.
            RoomEvent::Kicked { user } | RoomEvent::Banned { user } => {
                let (private, ban) = (self.private, matches!(event, RoomEvent::Banned { .. }));
                self.edit(user, |s| {
                    s.banned |= ban;
                    if private && s.role == Some(Role::Member) {
                        s.role = None;
                    }
                });
            }
            RoomEvent::Unbanned { user } => self.edit(user, |s| s.banned = false),
            RoomEvent::Muted { user } => self.edit(user, |s| s.muted = true),
            RoomEvent::Unmuted { user } => self.edit(user, |s| s.muted = false),
            RoomEvent::Deleted { .. } | RoomEvent::Erased { .. } => {}
        }
        *self != before
    }

    fn edit(&mut self, user: &str, change: impl FnOnce(&mut Standing)) {
        let mut standing = self.standing(user);
        change(&mut standing);
        if standing.is_default() {
            self.users.remove(user);
        } else {
            self.users.insert(user.to_owned(), standing);
        }
    }

    /// Whether it is the state of a room nobody created nor moderated.
    pub fn is_default(&self) -> bool {
        *self == RoomAccess::default()
    }
}

/// The server admins' user ids (`--server-admin`).
#[derive(Debug, Clone, Default)]
pub struct Admins(HashSet<String>);

impl Admins {
    /// Admins with these user ids.
    pub fn new(users: impl IntoIterator<Item = String>) -> Self {
        Self(users.into_iter().collect())
    }

    /// Whether `user` is one.
    pub fn contains(&self, user: &str) -> bool {
        self.0.contains(user)
    }
}

/// A user a kick or a ban took out of a room: their sockets leave it on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The room's key (`None`: the default room).
    pub room: Option<String>,
    /// Whose sockets leave.
    pub user: String,
    /// Who removed them.
    pub by: Option<String>,
    /// `kick` or `ban`.
    pub action: &'static str,
    /// The entry's id.
    pub id: u64,
}

impl Removal {
    /// The removal entry `id` of `room` by `by` makes, if it is a kick or a ban.
    pub fn of(id: u64, room: Option<&str>, by: Option<&str>, event: &RoomEvent) -> Option<Self> {
        let user = event.target().filter(|_| event.removes_user())?;
        Some(Self {
            room: room.map(String::from),
            user: user.to_owned(),
            by: by.map(String::from),
            action: event.action()?,
            id,
        })
    }
}

/// Every room's access state, in memory: read by the handlers on every join and post, written
/// only by the one thread that commits the log's entries (after each commit, before the
/// entries are published), loaded from the database at start. Also the queue of removals
/// that the sockets of this node have yet to carry out.
#[derive(Debug, Default)]
pub struct AccessMap {
    /// By room key (`None`: the default room); rooms in the default state are absent.
    rooms: RwLock<HashMap<Option<String>, RoomAccess>>,
    /// Removals not yet taken by [`AccessMap::removals`].
    removals: Mutex<Vec<Removal>>,
    /// Wakes whoever waits for removals.
    removed: Notify,
}

impl AccessMap {
    /// Runs `f` on room `room`'s state without copying it.
    pub fn with<T>(&self, room: &Option<String>, f: impl FnOnce(&RoomAccess) -> T) -> T {
        self.read(|rooms| match rooms.get(room) {
            Some(access) => f(access),
            None => f(&RoomAccess::default()),
        })
    }

    /// Whether room `room` has a state of its own (it was created, or someone has a role).
    pub fn has(&self, room: &Option<String>) -> bool {
        self.read(|rooms| rooms.contains_key(room))
    }

    /// Replaces every room's state (at start, from the database).
    pub fn load(&self, states: impl IntoIterator<Item = (Option<String>, RoomAccess)>) {
        let mut rooms = self.rooms.write().unwrap_or_else(PoisonError::into_inner);
        *rooms = states.into_iter().collect();
    }

    /// Sets room `room`'s state (the writer, after a commit).
    pub fn set(&self, room: Option<String>, access: RoomAccess) {
        let mut rooms = self.rooms.write().unwrap_or_else(PoisonError::into_inner);
        if access.is_default() {
            rooms.remove(&room);
        } else {
            rooms.insert(room, access);
        }
    }

    /// Queues removals for the sockets of this node (the writer, after a commit).
    pub fn remove_users(&self, removals: impl IntoIterator<Item = Removal>) {
        let mut queue = self.removals.lock().unwrap_or_else(PoisonError::into_inner);
        let before = queue.len();
        queue.extend(removals);
        if queue.len() > before {
            self.removed.notify_one();
        }
    }

    /// Waits for removals and takes them, in log order.
    pub async fn removals(&self) -> Vec<Removal> {
        loop {
            let removed = self.removed.notified();
            let taken =
                std::mem::take(&mut *self.removals.lock().unwrap_or_else(PoisonError::into_inner));
            if !taken.is_empty() {
                return taken;
            }
            removed.await;
        }
    }

    fn read<T>(&self, f: impl FnOnce(&HashMap<Option<String>, RoomAccess>) -> T) -> T {
        f(&self.rooms.read().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(user: &str) -> Option<&str> {
        Some(user)
    }

    const ANONYMOUS: Option<&str> = None;

    fn private_room_of(owner: &str) -> RoomAccess {
        let mut room = RoomAccess::default();
        assert!(room.apply(
            7,
            Some(owner),
            &RoomEvent::Created {
                private: true,
                read_only: false
            }
        ));
        room
    }

    #[test]
    fn a_private_room_admits_its_members_and_admins_only() {
        let admins = Admins::new(["root".to_string()]);
        let mut room = private_room_of("alice");
        assert_eq!(room.standing("alice").role, Some(Role::Owner));
        assert_eq!(room.created, 7);
        assert_eq!(room.may_join(user("alice"), &admins), Ok(()));
        assert_eq!(room.may_join(user("bob"), &admins), Err(Denied::NotAllowed));
        assert_eq!(room.may_join(ANONYMOUS, &admins), Err(Denied::NotAllowed));
        assert_eq!(room.may_join(user("root"), &admins), Ok(()));
        room.apply(8, Some("alice"), &RoomEvent::Invited { user: "bob".into() });
        assert_eq!(room.may_join(user("bob"), &admins), Ok(()));
        // A kick from a private room ends the membership; a ban also keeps them out.
        room.apply(9, Some("alice"), &RoomEvent::Kicked { user: "bob".into() });
        assert_eq!(room.may_join(user("bob"), &admins), Err(Denied::NotAllowed));
        room.apply(
            10,
            Some("alice"),
            &RoomEvent::Invited { user: "bob".into() },
        );
        room.apply(11, Some("alice"), &RoomEvent::Banned { user: "bob".into() });
        assert_eq!(room.may_join(user("bob"), &admins), Err(Denied::Banned));
        room.apply(
            12,
            Some("alice"),
            &RoomEvent::Unbanned { user: "bob".into() },
        );
        assert_eq!(room.may_join(user("bob"), &admins), Err(Denied::NotAllowed));
    }

    #[test]
    fn the_first_creation_wins() {
        let mut room = private_room_of("alice");
        let public = RoomEvent::Created {
            private: false,
            read_only: true,
        };
        assert!(!room.apply(9, Some("bob"), &public));
        assert_eq!(room.created, 7);
        assert_eq!(room.standing("bob").role, None);
        assert!(room.private);
    }

    #[test]
    fn moderators_act_on_those_below_them_only() {
        let admins = Admins::new(["root".to_string()]);
        let mut room = RoomAccess::default();
        room.apply(
            1,
            Some("alice"),
            &RoomEvent::Created {
                private: false,
                read_only: false,
            },
        );
        let mute = |who: &str| RoomEvent::Muted { user: who.into() };
        let promote = |who: &str| RoomEvent::RoleSet {
            user: who.into(),
            role: Role::Moderator,
        };
        assert_eq!(
            room.may_change(user("bob"), &mute("carol"), &admins),
            Err(Denied::NotAllowed)
        );
        assert_eq!(
            room.may_change(user("alice"), &promote("bob"), &admins),
            Ok(())
        );
        room.apply(2, Some("alice"), &promote("bob"));
        assert_eq!(
            room.may_change(user("bob"), &mute("carol"), &admins),
            Ok(())
        );
        // Only the owner sets roles; nobody acts on their equal or better.
        assert_eq!(
            room.may_change(user("bob"), &promote("carol"), &admins),
            Err(Denied::NotAllowed)
        );
        assert_eq!(
            room.may_change(user("bob"), &mute("alice"), &admins),
            Err(Denied::NotAllowed)
        );
        room.apply(3, Some("alice"), &promote("dave"));
        assert_eq!(
            room.may_change(user("bob"), &mute("dave"), &admins),
            Err(Denied::NotAllowed)
        );
        assert_eq!(
            room.may_change(user("root"), &mute("alice"), &admins),
            Ok(())
        );
        assert_eq!(
            room.may_change(user("alice"), &mute("root"), &admins),
            Err(Denied::NotAllowed)
        );
        assert_eq!(
            room.may_change(ANONYMOUS, &mute("carol"), &admins),
            Err(Denied::Anonymous)
        );
        // Nobody unmakes the owner through `set role`.
        room.apply(
            4,
            Some("root"),
            &RoomEvent::RoleSet {
                user: "alice".into(),
                role: Role::Member,
            },
        );
        assert_eq!(room.standing("alice").role, Some(Role::Owner));
    }

    #[test]
    fn muted_and_read_only_stop_posts_not_joins() {
        let admins = Admins::default();
        let mut room = RoomAccess::default();
        room.apply(
            1,
            Some("alice"),
            &RoomEvent::Created {
                private: false,
                read_only: true,
            },
        );
        assert_eq!(room.may_join(user("bob"), &admins), Ok(()));
        assert_eq!(room.may_post(user("bob"), &admins), Err(Denied::ReadOnly));
        assert_eq!(room.may_post(ANONYMOUS, &admins), Err(Denied::ReadOnly));
        assert_eq!(room.may_post(user("alice"), &admins), Ok(()));
        room.read_only = false;
        room.apply(2, Some("alice"), &RoomEvent::Muted { user: "bob".into() });
        assert_eq!(room.may_post(user("bob"), &admins), Err(Denied::Muted));
        assert_eq!(room.may_join(user("bob"), &admins), Ok(()));
        room.apply(3, Some("alice"), &RoomEvent::Unmuted { user: "bob".into() });
        assert_eq!(room.may_post(user("bob"), &admins), Ok(()));
        assert!(
            !room.users.contains_key("bob"),
            "a default standing is not kept"
        );
    }

    #[test]
    fn authors_and_moderators_delete() {
        let admins = Admins::default();
        let room = private_room_of("alice");
        assert_eq!(room.may_delete(user("bob"), Some("bob"), &admins), Ok(()));
        assert_eq!(
            room.may_delete(user("bob"), Some("carol"), &admins),
            Err(Denied::NotAllowed)
        );
        assert_eq!(
            room.may_delete(user("alice"), Some("carol"), &admins),
            Ok(())
        );
        assert_eq!(room.may_delete(user("alice"), None, &admins), Ok(()));
        assert_eq!(
            room.may_delete(ANONYMOUS, None, &admins),
            Err(Denied::Anonymous)
        );
    }
}
