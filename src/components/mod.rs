//! The component kinds, one folder each: its reconcile and its actions.
//! A component never depends on the recovery engine: the engine sees
//! components only through the contract (`crate::api::contract`), and
//! `tests/layers.rs` checks it.

pub mod application;
pub mod database;
pub mod server;
pub mod virtual_machine;
