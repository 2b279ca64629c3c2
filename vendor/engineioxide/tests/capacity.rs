//! `Socket::capacity` counts the packets that can still be queued.
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use engineioxide::{
    Str,
    config::EngineIoConfig,
    handler::EngineIoHandler,
    service::EngineIoService,
    socket::{DisconnectReason, Socket},
};
use tokio::sync::mpsc;

mod fixture;
use fixture::create_polling_connection;

#[derive(Debug)]
struct Counting {
    seen: mpsc::UnboundedSender<Vec<usize>>,
}

impl EngineIoHandler for Counting {
    type Data = ();
    fn on_connect(self: Arc<Self>, socket: Arc<Socket<()>>) {
        let mut capacities = vec![socket.capacity()];
        for n in 0..3 {
            socket.emit(format!("m{n}")).unwrap();
            capacities.push(socket.capacity());
        }
        self.seen.send(capacities).unwrap();
    }
    fn on_disconnect(&self, _: Arc<Socket<()>>, _: DisconnectReason) {}
    fn on_message(self: &Arc<Self>, _: Str, _: Arc<Socket<()>>) {}
    fn on_binary(self: &Arc<Self>, _: Bytes, _: Arc<Socket<()>>) {}
}

#[tokio::test]
async fn capacity_counts_the_free_slots() {
    let (seen, mut capacities) = mpsc::unbounded_channel();
    let config = EngineIoConfig::builder()
        .ping_interval(Duration::from_secs(60))
        .max_buffer_size(8)
        .build();
    let mut svc = EngineIoService::with_config(Arc::new(Counting { seen }), config);
    create_polling_connection(&mut svc).await;
    assert_eq!(capacities.recv().await.unwrap(), vec![8, 7, 6, 5]);
}
