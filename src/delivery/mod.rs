//! Delivery: messages are composed with lettre, queued durably in the outbox
//! (in the same transaction as the state change that caused them), and sent
//! by workers through the configured transport (SMTP pool or .eml files).

pub mod compose;
pub mod transport;
pub mod worker;

pub use transport::{DeliveryError, Mailer};
pub use worker::{drain, DeliveryWorker, DrainReport, Progress, WorkerOptions};
