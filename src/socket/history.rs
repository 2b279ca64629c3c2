//! `history ({ room, before, limit }, ack)`: a page of a room's older messages (the default
//! room's when it names none), ascending, read from the store through the room's index; a
//! room the connection may not join (private, banned) answers `{ error }`.
//! Requests count against the connection's rate limit, like sends.

use serde_json::json;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};

use std::future::Future;

use futures_util::future::Either;

use super::{ChatState, Connection, refuse, send_ack};
use crate::message::Message;
use crate::protocol::{EventArgs, parse_history_request};

/// One message of a page: `{ id, content, author, time, room }`.
#[derive(serde::Serialize)]
struct Entry {
    #[serde(flatten)]
    message: Message,
    room: String,
}

/// The `history` handler: the rate limit as the event arrives (see `chat`), then the read.
pub(super) fn on_history(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    ack: AckSender,
    State(state): State<ChatState>,
    Extension(connection): Extension<Connection>,
) -> impl Future<Output = ()> {
    match connection.take_allowance() {
        Ok(()) => Either::Left(answer(socket, args, ack, state, connection)),
        Err(refusal) => Either::Right(refuse(&socket, ack, refusal, &state, &connection)),
    }
}

async fn answer(
    socket: SocketRef,
    args: Result<EventArgs, socketioxide::ParserError>,
    ack: AckSender,
    state: ChatState,
    connection: Connection,
) {
    let request = args
        .map_err(|e| e.to_string())
        .and_then(|EventArgs(args)| parse_history_request(&args).map_err(|e| e.to_string()));
    let reply = match request {
        Err(error) => json!({ "error": error }),
        Ok(request)
            if let Err(denied) = super::rooms::may_join(
                &state,
                &connection,
                &request.room.as_ref().and_then(|name| state.rooms.key(name)),
            ) =>
        {
            // A private room's history is its members' (and a banned user's is closed).
            json!({ "error": denied.to_string() })
        }
        Ok(request) => {
            let reader = state.reader.clone();
            let room = request.room.as_ref().and_then(|name| state.rooms.key(name));
            let read = tokio::task::spawn_blocking(move || {
                reader.read_room_before(room.as_deref(), request.before, request.limit as usize)
            })
            .await;
            match read {
                Ok(Ok((rows, has_more))) => {
                    let messages: Vec<Entry> = rows
                        .into_iter()
                        .map(|row| {
                            let room = state.rooms.name(&row.message.room).to_string();
                            Entry {
                                message: Message::from(row),
                                room,
                            }
                        })
                        .collect();
                    json!({ "messages": messages, "hasMore": has_more })
                }
                Ok(Err(e)) => {
                    tracing::error!(sid = %socket.id, "history read failed: {e}");
                    json!({ "error": "history is unavailable right now" })
                }
                Err(e) => {
                    tracing::error!(sid = %socket.id, "history task failed: {e}");
                    json!({ "error": "history is unavailable right now" })
                }
            }
        }
    };
    send_ack(&socket, ack, &reply, &connection).await;
}
