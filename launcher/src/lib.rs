//! vmspawn: spawn an OS in a virtual machine, without root. A systemd-vmspawn 262 compatible
//! launcher.
//!
//! The pipeline is: `cli::parse` (command line → validated `Config`) → `host::discover`
//! (host facts) → `plan::needs` (what must be acquired) → `acquire::acquire` (TAP, KVM fd,
//! registration connection) → `plan::plan` (pure: every process of the VM, files, console)
//! → `runner::run` (materialise, start, supervise, stop, clean up).

#![deny(unsafe_code)]

pub mod acquire;
pub mod activation;
pub mod bootentry;
pub mod cli;
pub mod config;
pub mod console;
pub mod disk;
pub mod ephemeral_dir;
pub mod error;
pub mod firmware;
pub mod gui;
pub mod helper;
pub mod host;
pub mod journal;
pub mod network;
pub mod notify;
pub mod overlay;
pub mod parse;
pub mod plan;
pub mod process;
pub mod qemu_extra;
pub mod qmp;
pub mod register;
pub mod runner;
pub mod runtime;
pub mod sandbox;
pub mod scope;
pub mod spawn;
pub mod ssh;
pub mod supervise;
#[allow(unsafe_code)]
mod sys;
#[doc(hidden)]
pub mod testing;
pub mod tpm;
pub mod virtiofs;
pub mod vsock;
