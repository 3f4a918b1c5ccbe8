//! vmspawn: spawn an OS in a virtual machine, without root. A systemd-vmspawn 259 compatible
//! launcher.
//!
//! The pipeline is: `cli::parse` (command line → validated `Config`) → `host::discover`
//! (host facts) → `plan::plan` (pure: QEMU argv, files, console handling) → `runner::run`
//! (execute and supervise).

pub mod cli;
pub mod config;
pub mod console;
pub mod disk;
pub mod error;
pub mod firmware;
pub mod helper;
pub mod host;
pub mod network;
pub mod notify;
pub mod parse;
pub mod plan;
pub mod qmp;
pub mod register;
pub mod runner;
pub mod sandbox;
