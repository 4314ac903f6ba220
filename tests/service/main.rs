//! The real server on a random port with a temporary data directory, driven over HTTP.

#[path = "../common/mod.rs"]
mod common;

mod app;
mod auth_and_limits;
mod browser;
mod classify;
mod codes;
mod crash;
mod faults;
mod jobs;
mod models;
mod openapi;
mod scaleout;
mod sequences;
mod webdriver;
