//! Runs the delivery worker on the database of a casewire config until the
//! outbox is empty, as the daemon's worker does. The kill -9 test in
//! tests/delivery.rs starts and SIGKILLs this process.
//!
//! `cargo run --example outbox_sender -- CONFIG`

use std::path::Path;
use std::sync::Arc;

use casewire::config::Settings;
use casewire::delivery::{DeliveryWorker, Mailer, WorkerOptions};
use casewire::store::Db;
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let config = std::env::args()
        .nth(1)
        .expect("usage: outbox_sender CONFIG");
    let settings = Arc::new(Settings::load(Path::new(&config)).unwrap());
    let db = Db::open(&settings.database.url).await.unwrap();
    // As the daemon does: release what a killed predecessor left in `sending`.
    let mut options = WorkerOptions::new(&settings);
    options.stop_when_idle = true;
    DeliveryWorker {
        db,
        settings: settings.clone(),
        mailer: Mailer::from_settings(&settings.mail).unwrap(),
        wake: Default::default(),
        options,
        progress: Default::default(),
    }
    .try_run(CancellationToken::new())
    .await
    .unwrap();
}
