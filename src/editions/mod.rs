//! Editions: schedules, segmentation of subscribers, and digest rendering.

pub mod schedule;
