//! One integration-test binary: real servers on free ports, in-memory or
//! temp-dir storage, and the real `imctl` binary for CLI tests.

#[path = "../common/mod.rs"]
mod common;

mod account;
mod admin;
mod bench;
mod broker;
mod browser;
mod chaos;
mod cli;
mod client;
mod clients;
mod cluster;
mod cors;
mod cors_browser;
mod dashboard;
mod durability;
mod faults;
mod faults_clients;
mod faults_docs;
mod faults_ws;
mod favorites;
mod fuzz;
mod lan;
mod layering;
mod limits_http;
mod limits_store;
mod limits_ws;
mod login;
mod media;
mod metrics;
mod openapi;
mod partition;
mod persistence;
mod pipeline;
mod postgres;
mod qr_login;
mod quick_login;
mod snapshot;
mod social;
mod terminal;
mod web;
