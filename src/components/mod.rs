//! The component kinds, one folder each: its reconcile and its actions.
//! A component never imports the recovery engine (`crate::recovery`): the
//! engine sees components only through the contract (`crate::api::contract`).

pub mod application;
pub mod database;
pub mod server;
pub mod virtual_machine;
