//! Delivery: every stored message to every socket, once each, in id order, at each client's
//! pace.
//!
//! ```text
//! log ──publish──▶ hub ──┬──▶ tail cache (newest messages, for replays)
//!                        └──▶ live broadcaster ──▶ live set ──▶ outbox ──▶ socket
//! store / tail cache ──▶ catch-up reader ──▶ socket task ─┘ (replay, then join the live set)
//! ```
//!
//! - [`hub`]: where the log publishes newly stored messages, in id order; owns the tail cache.
//! - [`tail`]: the cache of the newest messages (pure).
//! - [`catch_up`]: one socket's reader of stored messages after its cursor.
//! - [`socket_task`]: one socket's delivery: a task replays, sends `sync` and catches up; while
//!   the socket is live its state waits in the live set, with no task.
//! - [`live`]: the live set and its one broadcaster task.
//! - [`outbox`]: queueing to one socket's bounded buffer without crowding out acks and pings.
//! - [`cursor`]: how far delivery to one socket has got (acks wait on it).
//!
//! Delivery reads the local store and the hub only: it does not know which log is behind them.

pub mod catch_up;
pub mod cursor;
pub mod hub;
pub mod live;
pub mod outbox;
pub mod socket_task;
pub mod subscription;
pub mod tail;

pub use catch_up::{BatchLimits, CatchUp};
pub use hub::Hub;
pub use socket_task::Live;
pub use subscription::{RoomKey, Subscription};
pub use tail::TailLimits;
