//! What more than one benchmark uses.

// Each benchmark is its own crate and uses only part of this.
#![allow(dead_code)]

pub mod cluster;
