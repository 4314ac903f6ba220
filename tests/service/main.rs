//! The real server on a random port with a temporary data directory, driven over HTTP.

#[path = "../common/mod.rs"]
mod common;

mod aliases;
mod app;
mod auth_and_limits;
mod browser;
mod budgets;
mod classify;
mod codes;
mod crash;
mod faults;
mod jobs;
mod mnist_fetch;
mod models;
mod openapi;
mod readme;
mod scaleout;
mod sequences;
mod webdriver;
