//! Editions: schedules, segmentation of subscribers, and digest rendering.

pub mod archive;
pub mod preview;
pub mod render;
pub mod run;
pub mod schedule;
pub mod scheduler;
