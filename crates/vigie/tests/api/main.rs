//! End-to-end tests: the real `vigie` binary started on 127.0.0.1, port 0,
//! and talked to over HTTP.

mod backend;
mod helpers;
