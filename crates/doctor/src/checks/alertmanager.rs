//! Alertmanager is ready. API (Alertmanager management API):
//! `GET /-/ready` answers 200 when Alertmanager is ready to serve traffic.

use crate::check::Outcome;
use crate::http::Auth;
use crate::stack::Stack;

pub async fn ready(stack: &Stack) -> Outcome {
    let url = format!("{}/-/ready", stack.urls.alertmanager);
    match stack.http.get(&url, &[], Auth::None).await {
        Ok(answer) if answer.status == 200 => Outcome::ok("ready"),
        Ok(answer) => Outcome::fail(format!("not ready: {}", answer.unexpected()))
            .hint("docker compose logs alertmanager --tail 50 (a configuration error keeps it from starting)"),
        Err(error) => Outcome::fail(error.to_string()).hint(Stack::unreachable_hint("alertmanager")),
    }
}
