//! End-to-end tests: the real `vigie` binary started on 127.0.0.1, port 0,
//! and talked to over HTTP.

mod backend;
mod doctor;
mod fixture;
mod guard;
mod helpers;
mod lab;
mod limits;
mod module_graph;
mod otlp;
mod prometheus;
mod router;
mod router_load;
mod router_prometheus;
mod stack;
mod stack_files;
mod traces;
